"""The core scenarios against real ElevenLabs: run only when ``ELEVENLABS_API_KEY`` is set.

Uses ``ELEVENLABS_VOICE_ID`` if set, else a premade voice every account has; keeps concurrency at
2 so a free plan passes. Audio is checked for length and level (it is real speech, so the
emulator's text decoder does not apply).
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest
from worker.providers.elevenlabs import ElevenLabsProvider

from shared.settings import Settings
from tests.worker.elevenlabs_fixtures import Outcome, collect, request

API_KEY = os.environ.get("ELEVENLABS_API_KEY")
VOICE = os.environ.get("ELEVENLABS_VOICE_ID", "21m00Tcm4TlvDq8ikWAM")

pytestmark = [
    pytest.mark.elevenlabs,
    pytest.mark.skipif(not API_KEY, reason="needs ELEVENLABS_API_KEY (real ElevenLabs)"),
]


def _settings() -> Settings:
    return Settings.from_env(
        {}, default_voice=VOICE, elevenlabs_api_key=API_KEY, elevenlabs_model="eleven_flash_v2_5",
        pool_min_sockets=1, pool_max_sockets=2, upstream_concurrency=2, upstream_slot_wait_s=30.0,
        upstream_first_audio_timeout_s=10.0, upstream_inactivity_timeout_s=60)


def _is_speech(out: Outcome, seconds: float) -> bool:
    pcm = np.frombuffer(out.audio[: len(out.audio) // 2 * 2], dtype="<i2").astype(np.float64)
    return pcm.size >= seconds * 24000 and float(np.sqrt(np.mean(pcm * pcm))) > 100.0


async def _speak(p: ElevenLabsProvider, text: str) -> Outcome:
    stream = await p.open_stream(request(voice=VOICE))
    try:
        await stream.send_text(text, flush=True)
        await stream.end_input()
        return await collect(stream)
    finally:
        await stream.cancel()


async def test_live_context_completes_with_audio() -> None:
    p = ElevenLabsProvider(_settings())
    await p.start()
    try:
        assert p.status()["sockets"]["open"] == 1
        out = await _speak(p, "Hello from the pooled gateway. ")
        assert out.error is None and _is_speech(out, 0.8)
        assert all(len(c.audio) % 2 == 0 for c in out.chunks)
    finally:
        await p.close()


async def test_live_cancel_stops_audio_and_frees_the_slot() -> None:
    p = ElevenLabsProvider(_settings())
    await p.start()
    try:
        stream = await p.open_stream(request(voice=VOICE))
        await stream.send_text("This is a long sentence that would take several seconds to speak aloud, "
                               "so we interrupt it early on purpose. ", flush=True)
        got: list[bytes] = []

        async def consume() -> None:
            async for chunk in stream:
                got.append(chunk.audio)

        consumer = asyncio.create_task(consume())
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert got
        await stream.cancel()
        seen = len(got)
        await asyncio.wait_for(consumer, 1.0)
        deadline = time.monotonic() + 15
        while p.status()["live_contexts"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert p.status()["live_contexts"] == 0  # the upstream final arrived
        assert len(got) == seen
        after = await _speak(p, "Next turn. ")
        assert after.error is None and _is_speech(after, 0.3)
    finally:
        await p.close()


async def test_live_concurrent_contexts() -> None:
    p = ElevenLabsProvider(_settings())
    await p.start()
    try:
        texts = ["First of three. ", "Second of three. ", "Third of three. "]
        outs = await asyncio.gather(*(_speak(p, t) for t in texts))  # the third waits for a permit
        assert all(o.error is None and _is_speech(o, 0.5) for o in outs)
    finally:
        await p.close()
