"""Stacks for the compatibility tests: gateway + real arq worker on a private Redis, real sockets.

``el_stack`` puts the ElevenLabs provider in front of the emulator, whose synthetic voice
``decode_text`` turns back into text: what a client hears can be compared with what it sent.
``local_stack`` uses the local Piper voice ``joe``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from emulator.config import EmulatorConfig
from emulator.runner import DEFAULT_VOICE_ID, RunningEmulator, run_emulator

from shared.settings import Settings
from tests.conftest import fast_settings
from tests.support.stack import running_gateway, running_worker

EL_VOICE = DEFAULT_VOICE_ID


@dataclass
class Stack:
    """A running gateway and what a test needs to talk to it."""

    base: str
    http: aiohttp.ClientSession
    settings: Settings
    emu: RunningEmulator | None = None


@contextlib.asynccontextmanager
async def el_stack(redis_url: str, emu_config: dict[str, Any] | None = None,
                   **overrides: Any) -> AsyncIterator[Stack]:
    """Emulator + worker (ElevenLabs provider pointed at it) + gateway."""
    async with run_emulator(EmulatorConfig(**(emu_config or {}))) as emu:
        settings = fast_settings(redis_url, providers=("elevenlabs",), elevenlabs_base_url=emu.http_url,
                                 elevenlabs_api_key="test-upstream-key", default_voice=EL_VOICE,
                                 elevenlabs_voices=(EL_VOICE,), pool_min_sockets=1, pool_max_sockets=16,
                                 upstream_concurrency=200, **overrides)
        async with running_worker(settings), running_gateway(settings) as base, \
                aiohttp.ClientSession() as http:
            yield Stack(base, http, settings, emu)


@contextlib.asynccontextmanager
async def local_stack(redis_url: str, **overrides: Any) -> AsyncIterator[Stack]:
    """The local Piper voice behind a worker and a gateway."""
    settings = fast_settings(redis_url, providers=("local",), **overrides)
    async with running_worker(settings), running_gateway(settings) as base, aiohttp.ClientSession() as http:
        yield Stack(base, http, settings)


@pytest.fixture
async def el(redis_url: str) -> AsyncIterator[Stack]:
    """The emulator-backed stack."""
    async with el_stack(redis_url) as s:
        yield s


@pytest.fixture
async def local(redis_url: str) -> AsyncIterator[Stack]:
    """The local-voice stack."""
    async with local_stack(redis_url) as s:
        yield s
