"""The HTTP API: whole, streamed, with timestamps (JSON and NDJSON), errors, voices and models."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import pytest
from emulator.runner import RunningEmulator
from emulator.synth import decode_text

from shared.audio import alaw_decode
from shared.audio.mp3frames import parse_frame_header

TEXT = "HTTP speech, several chunks long."


async def test_whole_body(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    url = emu.tts_url(output_format="pcm_24000")
    async with http.post(url, json={"text": TEXT, "model_id": "eleven_flash_v2_5"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("audio/pcm")
        body = await resp.read()
    assert decode_text(body, 24000) == TEXT
    assert emu.stats.http_requests["tts"] == 1


async def test_default_format_is_mp3(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.post(emu.tts_url(), json={"text": TEXT}) as resp:
        assert resp.headers["Content-Type"] == "audio/mpeg"
        body = await resp.read()
    header = parse_frame_header(body)
    assert header is not None and header.sample_rate == 44100 and header.bitrate_kbps == 128


async def test_stream_is_chunked_raw_audio(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(chunk_ms=200)
    async with http.post(
        emu.tts_url(suffix="/stream", output_format="alaw_8000"), json={"text": TEXT}
    ) as resp:
        assert resp.status == 200
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        chunks = [c async for c in resp.content.iter_any()]
    assert decode_text(alaw_decode(b"".join(chunks)), 8000) == TEXT


async def test_stream_can_split_samples(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(http_split_samples=True, chunk_ms=200, realtime_factor=50)
    async with http.post(
        emu.tts_url(suffix="/stream", output_format="pcm_16000"), json={"text": TEXT}
    ) as resp:
        chunks = [c async for c in resp.content.iter_chunked(1 << 20)]
    body = b"".join(chunks)
    assert len(chunks[0]) % 2 == 1  # the first chunk ends mid-sample, as the real API's sometimes do
    assert decode_text(body, 16000) == TEXT


async def test_with_timestamps(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    url = emu.tts_url(suffix="/with-timestamps", output_format="pcm_16000")
    async with http.post(url, json={"text": TEXT}) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert set(data) == {"audio_base64", "alignment", "normalized_alignment"}
    audio = base64.b64decode(data["audio_base64"])
    assert decode_text(audio, 16000) == TEXT
    al = data["alignment"]
    assert set(al) == {"characters", "character_start_times_seconds", "character_end_times_seconds"}
    assert "".join(al["characters"]) == TEXT
    assert al["character_start_times_seconds"][0] == 0
    assert al["character_end_times_seconds"][-1] == pytest.approx(len(audio) / 2 / 16000, abs=0.001)


async def test_stream_with_timestamps_is_ndjson(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(chunk_ms=300)
    url = emu.tts_url(suffix="/stream/with-timestamps", output_format="pcm_16000")
    async with http.post(url, json={"text": TEXT}) as resp:
        assert resp.status == 200
        raw = await resp.read()
    lines = raw.decode().splitlines()
    assert raw.endswith(b"\n") and len(lines) > 1
    objects = [json.loads(line) for line in lines]
    audio = b"".join(base64.b64decode(o["audio_base64"]) for o in objects)
    assert decode_text(audio, 16000) == TEXT
    starts: list[float] = []
    for obj in objects:
        assert set(obj) == {"audio_base64", "alignment", "normalized_alignment"}
        starts += obj["alignment"]["character_start_times_seconds"]
    assert starts == sorted(starts) and starts[0] == 0  # absolute across the response
    assert "".join(c for o in objects for c in o["alignment"]["characters"]) == TEXT


@pytest.mark.parametrize(
    ("body", "query", "status", "code"),
    [
        ({}, {}, 422, "validation_error"),
        ({"text": ""}, {}, 422, "validation_error"),
        ({"text": "x"}, {"output_format": "opus_48000_64"}, 422, "unsupported_output_format"),
        ({"text": "x"}, {"output_format": "wav_16000"}, 422, "invalid_output_format"),
        ({"text": "x", "voice_settings": {"speed": 3}}, {}, 422, "validation_error"),
        ({"text": "x" * 3001, "model_id": "eleven_v3"}, {}, 400, "max_character_limit_exceeded"),
    ],
)
async def test_errors(
    emu: RunningEmulator,
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    query: dict[str, str],
    status: int,
    code: str,
) -> None:
    async with http.post(emu.tts_url(suffix="/stream", **query), json=body) as resp:
        assert resp.status == status
        assert (await resp.json())["detail"]["status"] == code


async def test_malformed_body(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.post(emu.tts_url(), data=b"{oops", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 422


async def test_rejected_voice(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(reject_voice_ids=frozenset({"badvoice"}))
    async with http.post(emu.tts_url("badvoice"), json={"text": "x"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["detail"]["status"] == "voice_not_found"


async def test_voices_and_models(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{emu.http_url}/v1/voices") as resp:
        voices = (await resp.json())["voices"]
    assert voices and all({"voice_id", "name", "category"} <= set(v) for v in voices)
    async with http.get(f"{emu.http_url}/v1/models") as resp:
        models = await resp.json()
    assert {"eleven_flash_v2_5", "eleven_multilingual_v2"} <= {m["model_id"] for m in models}
    assert emu.stats.http_requests_total == 2
