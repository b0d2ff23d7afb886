"""OpenAI's ``/v1/audio/speech`` driven by the unmodified ``openai`` library, plus the raw edge cases."""

from __future__ import annotations

import base64
import json
import time

import openai
import pytest
from emulator.synth import decode_text

from shared.audio.analysis import decode_to_pcm16
from shared.audio.formats import parse_format
from tests.compat.conftest import el_stack, local_stack

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


@pytest.mark.parametrize(("fmt", "name"), [("opus", "opus_48000_64"), ("aac", "aac_24000_64"),
                                         ("flac", "flac_24000")])
async def test_compressed_formats_stream_with_the_openai_library(el, fmt: str, name: str) -> None:
    oa = client(el)
    async with oa.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TEXT, response_format=fmt) as resp:  # type: ignore[arg-type]
        assert resp.headers["content-type"] == parse_format(name).content_type
        assert "x-instructions" not in resp.headers  # none sent, nothing to report
        audio = b"".join([c async for c in resp.iter_bytes()])
    await oa.close()
    pcm, rate = decode_to_pcm16(audio, parse_format(name))
    assert rate == parse_format(name).sample_rate
    slack = 2 * 1024 / rate if fmt == "aac" else 0.0  # ADTS cannot signal AAC's encoder priming
    assert len(TEXT) * 0.06 - 0.01 <= len(pcm) / 2 / rate <= len(TEXT) * 0.06 + slack + 0.01


async def test_instructions_are_ignored_and_the_response_says_so(el) -> None:
    body = {"model": "gpt-4o-mini-tts", "voice": "coral", "input": TEXT, "response_format": "pcm",
            "instructions": "Speak like a cheerful pirate."}
    async with el.http.post(f"{el.base}/v1/audio/speech", json=body) as r:
        assert r.status == 200
        assert r.headers["X-Instructions"] == "ignored; provider elevenlabs takes no instructions"
        assert decode_text(await r.read(), 24000) == TEXT  # the speech itself is unaffected
    async with el.http.post(f"{el.base}/v1/audio/speech", json={**body, "instructions": ["not", "text"]}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "instructions"


async def test_bad_requests_in_openai_shape(el) -> None:
    for body, param in (({"model": "tts-1", "voice": "alloy"}, "input"),
                        ({"model": "tts-1", "voice": "alloy", "input": "hi", "speed": 9}, "speed"),
                        ({"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "ogg"},
                         "response_format"),
                        ({"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": ["opus"]},
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


async def test_every_current_openai_voice_name_maps_to_a_configured_voice(redis_url: str) -> None:
    """alloy ... cedar: mapped by OPENAI_VOICES where configured, else the default voice."""
    names = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
             "marin", "cedar")
    async with local_stack(redis_url, openai_voices=("marin=joe", "cedar=nobody-here")) as stack:
        oa = client(stack)
        for voice in names:
            if voice == "cedar":
                continue
            audio = await oa.audio.speech.create(model="tts-1", voice=voice, input="Hi.", response_format="pcm")
            assert len(audio.content) > 12000, voice
        # The mapping is really used: cedar points at a voice this deployment does not offer.
        with pytest.raises(openai.NotFoundError):
            await oa.audio.speech.create(model="tts-1", voice="cedar", input="Hi.", response_format="pcm")
        await oa.close()
