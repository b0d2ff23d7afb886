"""Pipecat's unmodified ElevenLabs services in a real pipeline against the gateway.

``ElevenLabsTTSService`` speaks ``multi-stream-input`` with the URL given verbatim (no ``/v1``),
reads only camelCase ``contextId``/``isFinal``, and keeps contexts alive with ``{"text": ""}``;
``ElevenLabsHttpTTSService`` posts to ``/stream/with-timestamps`` and parses NDJSON.
"""

from __future__ import annotations

import warnings

from emulator.synth import decode_text

from tests.compat.conftest import EL_VOICE, el_stack

# pipecat deprecates its own classes at import time; the suite turns warnings into errors, and
# that is pipecat's business, not a failure of ours. (It is in the ``test`` extra: never skipped.)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pipecat.frames.frames import InterruptionFrame, TTSAudioRawFrame, TTSSpeakFrame
    from pipecat.services.elevenlabs.tts import ElevenLabsHttpTTSService, ElevenLabsTTSService
    from pipecat.tests.utils import SleepFrame, run_test


def _audio(frames) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(f.audio for f in frames if isinstance(f, TTSAudioRawFrame))


async def test_pipecat_websocket_service(el) -> None:
    tts = ElevenLabsTTSService(api_key="xi-anything", url=el.base.replace("http", "ws", 1), sample_rate=16000,
                               settings=ElevenLabsTTSService.Settings(voice=EL_VOICE, model="eleven_flash_v2_5"))
    down, _ = await run_test(tts, frames_to_send=[TTSSpeakFrame("Hello from pipecat."), SleepFrame(sleep=1.5),
                                                  TTSSpeakFrame("A second turn."), SleepFrame(sleep=1.5)],
                             start_timeout=5.0)
    # pipecat sends each sentence without a trailing space; the words and their order are what count
    assert decode_text(_audio(down), 16000).split() == ["Hello", "from", "pipecat.A", "second", "turn."]


async def test_pipecat_http_service(el) -> None:
    tts = ElevenLabsHttpTTSService(api_key="xi-anything", base_url=el.base, aiohttp_session=el.http,
                                   sample_rate=16000,
                                   settings=ElevenLabsHttpTTSService.Settings(voice=EL_VOICE,
                                                                              model="eleven_flash_v2_5"))
    down, _ = await run_test(tts, frames_to_send=[TTSSpeakFrame("Pipecat over HTTP."), SleepFrame(sleep=1.0)],
                             start_timeout=5.0)
    assert decode_text(_audio(down), 16000).strip() == "Pipecat over HTTP."


async def test_pipecat_barge_in_hears_no_stale_audio(redis_url: str) -> None:
    long = "This first answer is long, and the user cuts it off before it can finish speaking."
    async with el_stack(redis_url, emu_config={"realtime_factor": 1.0, "chunk_ms": 100}) as stack:
        tts = ElevenLabsTTSService(api_key="xi-anything", url=stack.base.replace("http", "ws", 1), sample_rate=16000,
                                   settings=ElevenLabsTTSService.Settings(voice=EL_VOICE, model="eleven_flash_v2_5"))
        down, _ = await run_test(tts, frames_to_send=[
            TTSSpeakFrame(long), SleepFrame(sleep=0.8), InterruptionFrame(),
            TTSSpeakFrame("Second turn."), SleepFrame(sleep=2.0)], start_timeout=5.0)
    cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    before, after = _audio(down[:cut]), _audio(down[cut:])
    assert long.startswith(decode_text(before, 16000)) and 0 < len(before) < len(long) * 0.06 * 32000
    assert decode_text(after, 16000) == "Second turn."  # nothing of the interrupted turn after the cut
