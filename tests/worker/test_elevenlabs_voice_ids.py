"""Voice ids in the worker (issue 12, item 5): never a path segment of another endpoint, never a growing map."""

from __future__ import annotations

import asyncio
import time

import pytest
from worker.providers.elevenlabs.dialer import FAILURE_MEMORY
from worker.providers.elevenlabs.options import SocketKey, build_spec

from shared.errors import InvalidRequest
from shared.voice_ids import VOICE_ID_MAX_CHARS, check_voice_id, is_voice_id
from tests.support.procs import free_port
from tests.worker.elevenlabs_fixtures import VOICE, collect, el_settings, emulator, provider, request, speak

BAD = ["..", ".", "a/b", "../../v1/user", "v 1", "v%2F..", "x" * (VOICE_ID_MAX_CHARS + 1), "x" * 40_000, "é", "a\nb",
       "a?b", "a#b"]


@pytest.mark.parametrize("voice", BAD)
def test_bad_voice_ids_are_refused_before_any_url_is_built(voice: str) -> None:
    assert not is_voice_id(voice)
    with pytest.raises(InvalidRequest) as info:
        build_spec(voice, "", "pcm_24000", {}, {}, el_settings())
    assert info.value.code == "invalid_request" and info.value.details["field"] == "voice"
    assert voice not in info.value.message or len(voice) < 3  # never echoed back (40 KB of log per request)
    key = SocketKey(voice, "m", "pcm_24000", 20)
    with pytest.raises(InvalidRequest):
        key.url("wss://api.elevenlabs.io")  # defence in depth: the URL builder checks too


def test_good_voice_ids_pass() -> None:
    for voice in (VOICE, "joe", "alloy", "my-clone", "v_1", "x" * VOICE_ID_MAX_CHARS):
        assert check_voice_id(voice) == voice
        url = build_spec(voice, "", "pcm_24000", {}, {}, el_settings()).key.url("wss://h")
        assert url.startswith(f"wss://h/v1/text-to-speech/{voice}/multi-stream-input?")


async def test_a_dot_dot_voice_never_reaches_the_upstream() -> None:
    async with emulator() as emu, provider(emu) as p:
        with pytest.raises(InvalidRequest):
            await p.open_stream(request(voice=".."))
        ok = await speak(p, "still fine ")
        assert ok.error is None and ok.text() == "still fine "
        assert emu.stats.ws_connections_by_endpoint.get("multi-stream-input") == 1  # only the prewarmed one


async def test_the_failure_map_stays_bounded_with_many_failing_voices() -> None:
    # Nothing listens on this port: every distinct voice is a socket key whose connects all fail.
    base = f"http://127.0.0.1:{free_port()}"
    from worker.providers.elevenlabs import ElevenLabsProvider

    p = ElevenLabsProvider(el_settings(default_voice="", pool_min_sockets=0, pool_max_sockets=64,
                                       upstream_concurrency=1000, upstream_first_audio_timeout_s=1.0,
                                       pool_handshake_rate=1000.0),
                           base_url=base)
    await p.start()
    try:
        n = FAILURE_MEMORY + 150
        t0 = time.monotonic()

        async def one(i: int) -> None:
            stream = await p.open_stream(request(voice=f"voice{i:04d}"))
            await stream.send_text("hello ", flush=True)
            await stream.end_input()
            out = await collect(stream)
            assert out.error is not None and out.error.code == "upstream_disconnected"

        for start in range(0, n, 50):
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + 50))))
            assert len(p.pool.dialer.failures) <= FAILURE_MEMORY
        assert len(p.pool.dialer.failures) == FAILURE_MEMORY
        assert p.status()["live_contexts"] == 0 and p.status()["unplaced_contexts"] == 0
        print(f"\n{n} failing voices in {time.monotonic() - t0:.1f}s, failure map {len(p.pool.dialer.failures)}")
    finally:
        await p.close()
