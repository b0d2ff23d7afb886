"""The whole path with the ElevenLabs provider against the emulator: isolation, order, content."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from emulator.config import EmulatorConfig
from emulator.runner import DEFAULT_VOICE_ID, RunningEmulator, run_emulator
from emulator.synth import decode_text

from tests.conftest import fast_settings
from tests.support.stack import NativeClient, running_gateway, running_worker


@contextlib.asynccontextmanager
async def el_stack(redis_url: str, **emu_config: object) -> AsyncIterator[tuple[str, aiohttp.ClientSession,
                                                                                 RunningEmulator]]:
    """Emulator + worker (ElevenLabs provider pointed at it) + gateway."""
    async with run_emulator(EmulatorConfig(**emu_config)) as emu:  # type: ignore[arg-type]
        settings = fast_settings(redis_url, providers=("elevenlabs",), elevenlabs_base_url=emu.http_url,
                                 elevenlabs_api_key="test-upstream-key", default_voice=DEFAULT_VOICE_ID,
                                 elevenlabs_voices=(DEFAULT_VOICE_ID,), pool_min_sockets=1, pool_max_sockets=8,
                                 upstream_concurrency=100, max_contexts_per_session=8)
        async with running_worker(settings), running_gateway(settings) as base, \
                aiohttp.ClientSession() as http:
            yield base, http, emu


@pytest.fixture
async def stack(redis_url: str) -> AsyncIterator[tuple[str, aiohttp.ClientSession, RunningEmulator]]:
    async with el_stack(redis_url) as s:
        yield s


async def test_whole_utterance_content_and_order(stack) -> None:
    base, http, _emu = stack
    text = "A whole utterance, sent at once."
    async with NativeClient.connect(base, http) as client:
        res = await client.speak("u1", text, format="pcm_24000")
    assert res.error is None and res.final is not None and res.final["reason"] == "completed"
    assert res.seqs == list(range(len(res.frames)))
    assert decode_text(res.audio, 24000) == text


async def test_token_streamed_content_and_order(stack) -> None:
    base, http, _emu = stack
    text = "Tokens trickle in like an LLM writes them, and all of them are voiced in order."
    async with NativeClient.connect(base, http) as client:
        await client.send(type="start", context_id="t1", format="pcm_16000")
        for i in range(0, len(text), 3):
            await client.send(type="text", context_id="t1", text=text[i:i + 3])
        await client.send(type="end", context_id="t1")
        await client.pump_until(lambda c: c.ended("t1"))
    res = client.result("t1")
    assert res.final is not None, res.error
    assert res.seqs == list(range(len(res.frames)))
    assert decode_text(res.audio, 16000) == text


async def test_fifty_concurrent_sessions_get_only_their_own_audio(stack) -> None:
    base, http, emu = stack

    async def one(i: int) -> tuple[str, str]:
        text = f"Session {i:02d} hears only its own words."
        async with NativeClient.connect(base, http) as client:
            res = await client.speak(f"c{i}", text, format="pcm_16000", timeout=60)
        assert res.final is not None, res.error
        assert res.seqs == list(range(len(res.frames)))
        return text, decode_text(res.audio, 16000)

    results = await asyncio.gather(*(one(i) for i in range(50)))
    wrong = [(want, got) for want, got in results if want != got]
    assert not wrong, wrong[:3]
    assert emu.stats.max_active_contexts_per_socket <= 5
    assert emu.stats.context_cap_rejections == 0


async def test_barge_in_stale_audio_never_reaches_the_next_context(redis_url: str) -> None:
    # Paced upstream so the first context is mid-stream when it is cancelled.
    async with el_stack(redis_url, realtime_factor=4.0, chunk_ms=100.0) as (base, http, emu):
        async with NativeClient.connect(base, http) as client:
            await client.send(type="start", context_id="old", format="pcm_16000",
                              text="This old turn talks for quite a while before it is interrupted.", end=True)
            await client.pump_until(lambda c: len(c.result("old").frames) >= 2)
            await client.send(type="cancel", context_id="old")
            res = await client.speak("new", "Fresh turn.", format="pcm_16000")
            await asyncio.sleep(0.5)
            with contextlib.suppress(asyncio.TimeoutError):
                while True:
                    client.handle(await client.ws.receive(timeout=0.3))
        old = client.result("old")
        assert old.final is not None and old.final["reason"] == "cancelled"
        assert len(old.frames) == old.final["chunks"]
        assert decode_text(res.audio, 16000) == "Fresh turn."
        await emu.wait_until(lambda s: s.contexts_active == 0, timeout=5)
