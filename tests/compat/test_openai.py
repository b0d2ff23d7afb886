"""OpenAI's ``/v1/audio/speech`` driven by the unmodified ``openai`` library, plus the raw edge cases."""

from __future__ import annotations

import base64
import json
import time

import openai
import pytest
from emulator.synth import decode_text

from tests.compat.conftest import el_stack

TEXT = "OpenAI clients only change the base URL."


def client(stack) -> openai.AsyncOpenAI:  # type: ignore[no-untyped-def]
    return openai.AsyncOpenAI(base_url=f"{stack.base}/v1", api_key="sk-anything", max_retries=0)


async def test_streaming_response_with_the_openai_library(el) -> None:
    oa = client(el)
    chunks = []
    async with oa.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TEXT, response_format="pcm") as resp:
        assert resp.headers["content-type"].startswith("audio/pcm")
        async for chunk in resp.iter_bytes():
            chunks.append(chunk)
    await oa.close()
    assert decode_text(b"".join(chunks), 24000) == TEXT  # pcm = 24 kHz s16le, as OpenAI sends it


async def test_first_bytes_arrive_while_it_still_speaks(redis_url: str) -> None:
    text = "A longer answer that an assistant reads out, streamed piece by piece to the caller."
    async with el_stack(redis_url, emu_config={"realtime_factor": 2.0, "chunk_ms": 200}) as stack:
        oa = client(stack)
        t0 = time.monotonic()
        arrivals = []
        async with oa.audio.speech.with_streaming_response.create(
                model="gpt-4o-mini-tts", voice="nova", input=text, response_format="wav") as resp:
            async for _ in resp.iter_bytes():
                arrivals.append(time.monotonic() - t0)
        await oa.close()
    total = len(text) * 0.06 / 2.0
    assert arrivals[0] < total / 3 and arrivals[-1] > total * 0.8


@pytest.mark.parametrize("fmt", ["opus", "aac", "flac"])
async def test_unsupported_formats_are_refused_clearly(el, fmt: str) -> None:
    oa = client(el)
    with pytest.raises(openai.BadRequestError) as info:
        await oa.audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format=fmt)  # type: ignore[arg-type]
    await oa.close()
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "unsupported_format" and err["param"] == "response_format"
    assert fmt in err["message"] and "mp3, wav or pcm" in err["message"]
    assert err["type"] == "invalid_request_error"


async def test_bad_requests_in_openai_shape(el) -> None:
    for body, param in (({"model": "tts-1", "voice": "alloy"}, "input"),
                        ({"model": "tts-1", "voice": "alloy", "input": "hi", "speed": 9}, "speed"),
                        ({"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "ogg"},
                         "response_format")):
        async with el.http.post(f"{el.base}/v1/audio/speech", json=body) as r:
            assert r.status == 400
            got = (await r.json())["error"]
        assert got["param"] == param and got["type"] == "invalid_request_error" and got["message"]


async def test_openai_voice_names_map_to_the_default_voice(local) -> None:
    oa = client(local)
    for voice in ("alloy", "echo", "joe"):
        audio = await oa.audio.speech.create(model="tts-1", voice=voice, input="Hi there.", response_format="pcm")
        assert len(audio.content) > 24000  # over half a second of real speech
    with pytest.raises(openai.NotFoundError):
        await oa.audio.speech.create(model="tts-1", voice="nobody-here", input="Hi.", response_format="pcm")
    await oa.close()


async def test_models_list_parses_in_the_openai_library(el) -> None:
    oa = client(el)
    ids = [m.id async for m in oa.models.list()]
    await oa.close()
    assert "tts-1" in ids and "eleven_flash_v2_5" in ids


async def test_sse_stream_format(el) -> None:
    async with el.http.post(f"{el.base}/v1/audio/speech", json={
            "model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "pcm",
            "stream_format": "sse"}) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        events = [json.loads(line[6:]) for line in (await r.text()).split("\n\n") if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert decode_text(audio, 24000) == TEXT
