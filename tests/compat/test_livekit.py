"""LiveKit Agents' unmodified ``livekit-plugins-elevenlabs`` against the gateway (base URL swapped).

Its streaming TTS speaks ``multi-stream-input`` (one shared socket, one context per stream, init
with ``voice_settings: {}``, sentences with ``flush``, ``close_context``, ``sync_alignment=true``,
``inactivity_timeout=180``); its ``synthesize`` posts to ``/stream`` and insists on ``audio/*``.
"""

from __future__ import annotations

import asyncio

import aiohttp
import livekit.plugins.elevenlabs as lk
from emulator.synth import decode_text

from tests.compat.conftest import EL_VOICE, el_stack


def make_tts(base: str, http: aiohttp.ClientSession, **kw: object):  # type: ignore[no-untyped-def]
    return lk.TTS(voice_id=EL_VOICE, api_key="xi-anything", base_url=f"{base}/v1", encoding="pcm_16000",
                  model="eleven_flash_v2_5", http_session=http, **kw)


async def _stream(tts, parts: list[str]) -> bytes:  # type: ignore[no-untyped-def]
    stream = tts.stream()
    for p in parts:
        stream.push_text(p)
    stream.end_input()
    audio = b"".join([bytes(ev.frame.data) async for ev in stream])
    await stream.aclose()
    return audio


async def test_livekit_streaming_tts(el) -> None:
    tts = make_tts(el.base, el.http)
    try:
        audio = await _stream(tts, ["Hello from LiveKit. ", "It streams ", "sentence by sentence."])
    finally:
        await tts.aclose()
    assert decode_text(audio, 16000).strip() == "Hello from LiveKit. It streams sentence by sentence."


async def test_livekit_many_concurrent_streams_share_one_socket(redis_url: str) -> None:
    # LiveKit multiplexes every stream of a TTS over one socket: more than ElevenLabs' 5 at once here.
    async with el_stack(redis_url, emu_config={"realtime_factor": 4.0}) as stack:
        tts = make_tts(stack.base, stack.http)
        try:
            texts = [f"Agent turn {i} speaks now." for i in range(8)]
            got = await asyncio.gather(*(_stream(tts, [t]) for t in texts))
        finally:
            await tts.aclose()
    assert [decode_text(a, 16000).strip() for a in got] == texts  # LiveKit appends a space


async def test_livekit_synthesize_over_http(el) -> None:
    tts = make_tts(el.base, el.http)
    try:
        stream = tts.synthesize("One whole sentence over HTTP.")
        audio = b"".join([bytes(ev.frame.data) async for ev in stream])
        await stream.aclose()
    finally:
        await tts.aclose()
    assert decode_text(audio, 16000) == "One whole sentence over HTTP."
