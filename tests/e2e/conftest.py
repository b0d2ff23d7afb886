"""Fixtures for whole-stack tests: gateway + real arq worker (local Piper voice) on a private Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from shared.settings import Settings
from tests.conftest import fast_settings
from tests.support.stack import running_gateway, running_worker, worker_http


@pytest.fixture
def local_settings(redis_url: str) -> Settings:
    """Settings for a stack with one worker speaking the local voice."""
    return fast_settings(redis_url, providers=("local",))


@pytest.fixture
async def local_worker(local_settings: Settings) -> AsyncIterator[str]:
    """The stack's worker; yields the base URL of its own HTTP port (/metrics, /readyz)."""
    async with running_worker(local_settings) as worker, worker_http(worker) as base:
        yield base


@pytest.fixture
async def local_stack(local_settings: Settings, local_worker: str) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """(gateway base URL, HTTP session) in front of ``local_worker``."""
    async with running_gateway(local_settings) as base, aiohttp.ClientSession() as http:
        yield base, http
