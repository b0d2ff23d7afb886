"""Fixtures for whole-stack tests: gateway + real arq worker (local Piper voice) on a private Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import fast_settings
from tests.support.stack import running_gateway, running_worker


@pytest.fixture
async def local_stack(redis_url: str) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """(gateway base URL, HTTP session) with one worker speaking the local voice."""
    settings = fast_settings(redis_url, providers=("local",))
    async with running_worker(settings), running_gateway(settings) as base, aiohttp.ClientSession() as http:
        yield base, http
