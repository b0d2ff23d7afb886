"""Fixtures for the emulator's own tests: an emulator on a real port and an HTTP/WS client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from emulator.config import EmulatorConfig
from emulator.runner import RunningEmulator, run_emulator


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    """A fresh emulator with default (fast) timing; tests change its config at runtime."""
    async with run_emulator(EmulatorConfig()) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for HTTP requests and WebSocket connections."""
    async with aiohttp.ClientSession() as session:
        yield session
