"""Stacks for the compatibility tests: gateway + real arq worker on a private Redis, real sockets.

``el_stack`` puts the ElevenLabs provider in front of the emulator, whose synthetic voice
``decode_text`` turns back into text: what a client hears can be compared with what it sent.
``local_stack`` uses the local Piper voice ``joe``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from emulator.config import EmulatorConfig
from emulator.runner import DEFAULT_VOICE_ID, RunningEmulator, run_emulator
from worker.runner import WakeableWorker

from shared.settings import Settings
from tests.conftest import fast_settings
from tests.support.stack import running_gateway, running_worker, worker_http

EL_VOICE = DEFAULT_VOICE_ID


@dataclass
class Stack:
    """A running gateway and what a test needs to talk to it (``worker_base``: the worker's own /metrics port)."""

    base: str
    http: aiohttp.ClientSession
    settings: Settings
    worker_base: str
    emu: RunningEmulator | None = None


@contextlib.asynccontextmanager
async def idle_on_exit(worker: WakeableWorker) -> AsyncIterator[WakeableWorker]:
    """Let the worker finish its jobs before it is stopped.

    A test may end the moment its client saw a final, while the worker still wraps the job up;
    stopping it then cancels that job and ``WakeableWorker.close`` re-raises the cancellation
    before it stops the heartbeat and providers, leaving a zombie worker for the next test.
    """
    try:
        yield worker
    finally:
        for _ in range(500):
            if all(t.done() for t in worker.tasks.values()):
                break
            await asyncio.sleep(0.01)


async def wait_ready(base: str, http: aiohttp.ClientSession) -> None:
    """Until /readyz sees a live worker with voices (a worker is up before its first heartbeat lands)."""
    for _ in range(300):
        async with http.get(f"{base}/readyz") as r:
            if r.status == 200 and (await r.json()).get("voices"):
                return
        await asyncio.sleep(0.02)
    raise TimeoutError("no worker became ready")


@contextlib.asynccontextmanager
async def el_stack(redis_url: str, emu_config: dict[str, Any] | None = None,
                   **overrides: Any) -> AsyncIterator[Stack]:
    """Emulator + worker (ElevenLabs provider pointed at it) + gateway."""
    async with run_emulator(EmulatorConfig(**(emu_config or {}))) as emu:
        defaults: dict[str, Any] = {"elevenlabs_voices": (EL_VOICE,)}  # () = every voice the account lists
        settings = fast_settings(redis_url, providers=("elevenlabs",), elevenlabs_base_url=emu.http_url,
                                 elevenlabs_api_key="test-upstream-key", default_voice=EL_VOICE,
                                 pool_min_sockets=1, pool_max_sockets=16,
                                 upstream_concurrency=200, **{**defaults, **overrides})
        async with running_worker(settings) as worker, idle_on_exit(worker), worker_http(worker) as worker_base, \
                running_gateway(settings) as base, aiohttp.ClientSession() as http:
            await wait_ready(base, http)
            yield Stack(base, http, settings, worker_base, emu)


@contextlib.asynccontextmanager
async def local_stack(redis_url: str, **overrides: Any) -> AsyncIterator[Stack]:
    """The local Piper voice behind a worker and a gateway."""
    settings = fast_settings(redis_url, providers=("local",), **overrides)
    async with running_worker(settings) as worker, idle_on_exit(worker), worker_http(worker) as worker_base, \
            running_gateway(settings) as base, aiohttp.ClientSession() as http:
        await wait_ready(base, http)
        yield Stack(base, http, settings, worker_base)


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
