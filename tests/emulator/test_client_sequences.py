"""The exact message sequences LiveKit's and pipecat's ElevenLabs plugins send (reference §8)."""

from __future__ import annotations

import aiohttp
from emulator.runner import RunningEmulator
from emulator.synth import decode_text

from tests.emulator.wsclient import read


async def test_livekit_sequence(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    url = emu.multi_stream_url(
        model_id="eleven_turbo_v2_5", output_format="pcm_24000", enable_ssml_parsing=False,
        enable_logging=True, inactivity_timeout=180, apply_text_normalization="auto",
        sync_alignment=True, auto_mode=True,
    )  # fmt: skip
    async with http.ws_connect(url, headers={"xi-api-key": "any"}) as ws:
        for cid, sentences in (("lk1", ["Hello there. ", "How are you? "]), ("lk2", [])):
            await ws.send_json({"text": " ", "voice_settings": {}, "context_id": cid})
            for sentence in sentences:
                await ws.send_json({"text": sentence, "context_id": cid, "flush": True})
            await ws.send_json({"text": "", "context_id": cid, "flush": True})
            await ws.send_json({"context_id": cid, "close_context": True})
        got = await read(ws, finals={"lk1", "lk2"})
    assert decode_text(got.audio("lk1"), 24000) == "Hello there. How are you? "
    assert sorted(f for f in got.finals() if f) == ["lk1", "lk2"]  # an empty input still gets its final
    for frame in got.audio_frames():
        al = frame["normalizedAlignment"]
        assert len(al["chars"]) == len(al["charStartTimesMs"]) == len(al["charDurationsMs"])


async def test_pipecat_sequence_and_teardown(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    url = emu.multi_stream_url(model_id="eleven_flash_v2_5", output_format="pcm_16000", auto_mode=True)
    async with http.ws_connect(url, headers={"xi-api-key": "any"}) as ws:
        await ws.send_json({"text": ""})  # connection keep-alive before any context
        await ws.send_json({"text": " ", "context_id": "t1"})
        await ws.send_json({"text": "No trailing space", "context_id": "t1"})
        await ws.send_json({"text": "", "context_id": "t1"})  # keep-alive of an initialised context
        await ws.send_json({"context_id": "t1", "flush": True})
        await ws.send_json({"context_id": "t1", "close_context": True})
        got = await read(ws, finals={"t1"})
        assert decode_text(got.audio("t1"), 16000) == "No trailing space"
        # Barge-in: a second turn closed before its text was flushed still ends with one final.
        await ws.send_json({"text": " ", "context_id": "t2"})
        await ws.send_json({"context_id": "t2", "close_context": True})
        await ws.send_json({"close_socket": True})
        got = await read(ws)
    assert got.finals() == ["t2"] and got.close_code == 1000
    assert emu.stats.max_active_contexts_per_socket == 1


async def test_sdk_convert_realtime_query(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    # Without model_id the SDK sends the literal "Ellipsis"; unknown models are accepted.
    url = emu.stream_input_url(model_id="Ellipsis", output_format="mp3_44100_128")
    async with http.ws_connect(url) as ws:
        await ws.send_json({"text": " ", "try_trigger_generation": True, "voice_settings": None})
        await ws.send_json({"text": "mp3 please ", "try_trigger_generation": True})
        await ws.send_json({"text": ""})
        got = await read(ws)
    assert got.close_code == 1000 and got.audio()[:2] == b"\xff\xfb"  # MPEG-1 Layer III frame sync
