"""ElevenLabs HTTP endpoints: streamed audio, timestamps, listings and errors, over real sockets."""

from __future__ import annotations

import base64
import itertools
import json
import time

import aiohttp
import pytest
from emulator.synth import decode_text

from shared.audio.analysis import decode_to_pcm16
from shared.audio.formats import parse_format
from tests.compat.conftest import EL_VOICE, el_stack
from tests.conftest import fast_settings
from tests.support.stack import running_gateway

TEXT = "Streaming speech over plain HTTP."
MS_PER_CHAR = 60.0  # the emulator's synthetic voice


def tts_url(stack, suffix: str = "", voice: str = EL_VOICE, **query: str) -> str:  # type: ignore[no-untyped-def]
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{stack.base}/v1/text-to-speech/{voice}{suffix}" + (f"?{q}" if q else "")


async def test_stream_is_chunked_audio_of_the_text(el) -> None:
    async with el.http.post(tts_url(el, "/stream", output_format="pcm_16000"),
                            json={"text": TEXT, "model_id": "eleven_flash_v2_5", "voice_settings": None}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("audio/pcm")
        assert r.headers.get("Transfer-Encoding") == "chunked"
        body = await r.read()
    assert decode_text(body, 16000) == TEXT


async def test_plain_endpoint_defaults_to_mp3_44100(el) -> None:
    async with el.http.post(tts_url(el), json={"text": TEXT}) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "audio/mpeg"
        body = await r.read()
    pcm, rate = decode_to_pcm16(body, parse_format("mp3_44100_128"))
    assert rate == 44100
    assert abs(len(pcm) / 2 / rate - len(TEXT) * MS_PER_CHAR / 1000) < 0.1


async def test_stream_sends_audio_before_the_utterance_is_done(redis_url: str) -> None:
    text = "A long sentence that takes a while to speak out loud, so it streams in pieces."
    async with el_stack(redis_url, emu_config={"realtime_factor": 2.0, "chunk_ms": 200}) as stack:
        t0 = time.monotonic()
        async with stack.http.post(tts_url(stack, "/stream", output_format="pcm_16000"), json={"text": text}) as r:
            arrivals = []
            async for _chunk in r.content.iter_any():
                arrivals.append(time.monotonic() - t0)
    total = len(text) * MS_PER_CHAR / 1000 / 2.0
    assert arrivals[0] < total / 3, (arrivals[0], total)
    assert arrivals[-1] > total * 0.8


async def test_with_timestamps_is_one_object_with_absolute_seconds(el) -> None:
    async with el.http.post(tts_url(el, "/with-timestamps", output_format="pcm_24000"), json={"text": TEXT}) as r:
        assert r.status == 200
        obj = await r.json()
    assert set(obj) == {"audio_base64", "alignment", "normalized_alignment"}
    audio = base64.b64decode(obj["audio_base64"])
    assert decode_text(audio, 24000) == TEXT
    al = obj["alignment"]
    assert "".join(al["characters"]) == TEXT
    starts, ends = al["character_start_times_seconds"], al["character_end_times_seconds"]
    assert starts == sorted(starts) and all(e >= s for s, e in zip(starts, ends))
    assert starts[0] == pytest.approx(0.0, abs=0.01)
    assert ends[-1] == pytest.approx(len(audio) / 48000, abs=0.02)


async def test_stream_with_timestamps_is_ndjson_with_absolute_seconds(el) -> None:
    text = TEXT * 3
    async with el.http.post(tts_url(el, "/stream/with-timestamps", output_format="pcm_16000"),
                            json={"text": text}) as r:
        assert r.status == 200
        lines = [json.loads(line) for line in (await r.read()).splitlines() if line.strip()]
    assert len(lines) > 1
    audio = b"".join(base64.b64decode(line["audio_base64"]) for line in lines)
    assert decode_text(audio, 16000) == text
    chars, starts, offset = [], [], 0.0
    for line in lines:
        al = line["alignment"]
        assert line["normalized_alignment"] == al
        if al:
            chars += al["characters"]
            starts += al["character_start_times_seconds"]
            # each chunk's characters start within that chunk's audio, on the stream's clock
            assert offset - 0.01 <= al["character_start_times_seconds"][0] <= offset + 0.6
        offset += len(base64.b64decode(line["audio_base64"])) / 32000
    assert "".join(chars) == text and starts == sorted(starts)
    assert starts[-1] == pytest.approx((len(text) - 1) * MS_PER_CHAR / 1000, abs=0.02)


async def test_error_after_audio_started_truncates_the_body(redis_url: str) -> None:
    emu = {"chunk_ms": 100, "drop_after_chunks": 2, "fault_sockets": 100}
    # Failover off: with it on, the context would resume on another socket (tests/faults/test_failover.py).
    async with el_stack(redis_url, emu_config=emu, max_retries=0, failover_max_per_context=0) as stack, \
            stack.http.post(tts_url(stack, "/stream", output_format="pcm_16000"), json={"text": TEXT * 4}) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


@pytest.mark.parametrize(("body", "query", "status", "code"), [
    ({"model_id": "eleven_flash_v2_5"}, {}, 422, "invalid_request"),
    ({"text": "   "}, {}, 422, "invalid_request"),
    ({"text": "hi"}, {"output_format": "opus_48000_48"}, 422, "unsupported_format"),
    ({"text": "hi", "voice_settings": {"stability": "high"}}, {}, 422, "invalid_message"),
    ("not json", {}, 400, "invalid_json"),
])
async def test_errors_are_elevenlabs_shaped(el, body: object, query: dict[str, str], status: int,
                                            code: str) -> None:
    kw = {"data": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, str) else {"json": body}
    async with el.http.post(tts_url(el, "/stream", **query), **kw) as r:
        assert r.status == status
        got = await r.json()
    assert got["detail"]["status"] == code and got["detail"]["message"]


async def test_unknown_voice_is_404(local) -> None:
    async with local.http.post(tts_url(local, "/stream", voice="nobody"), json={"text": "hi"}) as r:
        assert r.status == 404
        assert (await r.json())["detail"]["status"] == "unknown_voice"


async def test_no_workers_is_503_with_retry_after(redis_url: str) -> None:
    async with running_gateway(fast_settings(redis_url)) as base, aiohttp.ClientSession() as http, \
            http.post(f"{base}/v1/text-to-speech/joe/stream", json={"text": "hi"}) as r:
        assert r.status == 503 and r.headers["Retry-After"] == "1"
        assert (await r.json())["detail"]["status"] == "no_workers"


async def test_voices_are_listed_elevenlabs_shaped(local) -> None:
    async with local.http.get(f"{local.base}/v1/voices") as r:
        assert r.status == 200
        voices = (await r.json())["voices"]
    joe = next(v for v in voices if v["voice_id"] == "joe")
    assert joe["name"] and joe["category"] == "premade" and joe["labels"]["provider"] == "local"
    async with local.http.get(f"{local.base}/v1/voices/joe") as r:
        assert (await r.json())["voice_id"] == "joe"
    async with local.http.get(f"{local.base}/v1/voices/nobody") as r:
        assert r.status == 404 and (await r.json())["detail"]["status"] == "unknown_voice"


async def test_models_list_in_the_shape_each_client_parses(el) -> None:
    async with el.http.get(f"{el.base}/v1/models", headers={"xi-api-key": "anything"}) as r:
        models = await r.json()
    assert isinstance(models, list) and models[0]["model_id"] == "eleven_flash_v2_5"
    assert all(m["can_do_text_to_speech"] for m in models)
    async with el.http.get(f"{el.base}/v1/models", headers={"Authorization": "Bearer anything"}) as r:
        page = await r.json()
    assert page["object"] == "list" and {"tts-1", "eleven_flash_v2_5"} <= {m["id"] for m in page["data"]}
    async with el.http.get(f"{el.base}/v1/models?shape=openai") as r:
        assert (await r.json())["object"] == "list"


async def test_v2_voices_pages_and_searches(redis_url: str) -> None:
    async with el_stack(redis_url, elevenlabs_voices=()) as stack:
        url = f"{stack.base}/v2/voices"
        async with stack.http.get(url) as r:
            page = await r.json()
        assert set(page) == {"voices", "has_more", "total_count", "next_page_token"}
        assert [v["name"] for v in page["voices"]] == ["Adam", "George", "Rachel", "Sarah"]
        assert page["has_more"] is False and page["total_count"] == 4 and page["next_page_token"] is None
        async with stack.http.get(url, params={"page_size": "3"}) as r:
            first = await r.json()
        assert len(first["voices"]) == 3 and first["has_more"] is True
        async with stack.http.get(url, params={"page_size": "3", "next_page_token": first["next_page_token"]}) as r:
            second = await r.json()
        assert [v["name"] for v in second["voices"]] == ["Sarah"] and second["has_more"] is False
        # Search: name, labels and description, case-insensitive; filters compose with paging.
        async with stack.http.get(url, params={"search": "BRITISH"}) as r:
            assert [v["name"] for v in (await r.json())["voices"]] == ["George"]
        async with stack.http.get(url, params={"search": "nobody like this"}) as r:
            empty = await r.json()
        assert empty == {"voices": [], "has_more": False, "total_count": 0, "next_page_token": None}
        for params in ({"page_size": "0"}, {"page_size": "101"}, {"page_size": "x"},
                       {"next_page_token": "%%%not-ours"}, {"search": "x" * 201}):
            async with stack.http.get(url, params=params) as r:
                assert r.status in (400, 422), params
                assert (await r.json())["detail"]["status"] == "invalid_request"


async def test_timestamps_are_continuous_and_the_same_on_every_endpoint(redis_url: str) -> None:
    """Absolute times never reset between chunks, and HTTP, NDJSON and WebSocket agree on them."""
    text = "Timing stays continuous across many small chunks of speech. " * 3
    async with el_stack(redis_url, emu_config={"chunk_ms": 100}) as stack:
        async with stack.http.post(tts_url(stack, "/with-timestamps", output_format="pcm_16000"),
                                   json={"text": text}) as r:
            whole = (await r.json())["alignment"]
        async with stack.http.post(tts_url(stack, "/stream/with-timestamps", output_format="pcm_16000"),
                                   json={"text": text}) as r:
            lines = [json.loads(x) for x in (await r.read()).splitlines() if x.strip()]
        from tests.compat.elclient import ElClient

        async with ElClient.connect(stack.base, stack.http, voice=EL_VOICE, output_format="pcm_16000",
                                    sync_alignment=True) as c:
            await c.send(text=" ", context_id="a")
            await c.send(text=text, context_id="a", flush=True)
            await c.send(context_id="a", close_context=True)
            await c.pump_until(lambda c: c.final("a"))
    assert len(lines) > 10 and "".join(whole["characters"]) == text
    starts = whole["character_start_times_seconds"]
    assert starts == sorted(starts) and starts[-1] == pytest.approx((len(text) - 1) * 0.06, abs=0.01)
    streamed = [t for x in lines if x["alignment"] for t in x["alignment"]["character_start_times_seconds"]]
    assert streamed == starts
    # ElevenLabs' WebSocket times are relative to each chunk (what unmodified clients expect): adding
    # each chunk's start (its audio so far) gives the HTTP times exactly.
    ctx, offset, ws_starts = c.get("a"), 0.0, []
    for audio, al in zip(ctx.chunks, ctx.alignments):
        if al:
            ws_starts += [round(offset + t / 1000, 3) for t in al["charStartTimesMs"]]
        offset += len(audio) / 32000
    assert ws_starts == starts


async def test_words_are_an_opt_in_view_on_both_timestamp_endpoints(el) -> None:
    text = "Cut the audio at a word boundary."
    async with el.http.post(tts_url(el, "/with-timestamps", output_format="pcm_24000"), json={"text": text}) as r:
        assert "words" not in await r.json()
    async with el.http.post(tts_url(el, "/with-timestamps", output_format="pcm_24000", words="true"),
                            json={"text": text}) as r:
        obj = await r.json()
    words = obj["words"]
    assert [w["word"] for w in words] == text.split()
    starts, ends = obj["alignment"]["character_start_times_seconds"], obj["alignment"]["character_end_times_seconds"]
    assert words[0]["start_ms"] == round(starts[0] * 1000) and words[-1]["end_ms"] == round(ends[-1] * 1000)
    assert all(a["end_ms"] <= b["start_ms"] for a, b in itertools.pairwise(words))
    # Cut the audio at the third word's start: what is left before it is exactly the first two words.
    audio = base64.b64decode(obj["audio_base64"])
    cut = audio[: round(words[2]["start_ms"] * 24) * 2]
    assert decode_text(cut, 24000).strip() == "Cut the"
    async with el.http.post(tts_url(el, "/stream/with-timestamps", output_format="pcm_24000", words="true"),
                            json={"text": text}) as r:
        lines = [json.loads(x) for x in (await r.read()).splitlines() if x.strip()]
    assert [w for x in lines for w in x["words"]] == words


@pytest.mark.parametrize("fmt", ["pcm_16000", "opus_48000_64"])
async def test_native_alignment_offsets_give_the_http_times(redis_url: str, fmt: str) -> None:
    """Native protocol: offset_ms + charStartTimesMs is the same absolute timeline /with-timestamps gives."""
    from tests.support.stack import NativeClient

    text = "The native socket says where every chunk starts. " * 2
    async with el_stack(redis_url, emu_config={"chunk_ms": 100}) as stack:
        async with stack.http.post(tts_url(stack, "/with-timestamps", output_format=fmt), json={"text": text}) as r:
            http_starts = (await r.json())["alignment"]["character_start_times_seconds"]
        async with NativeClient.connect(stack.base, stack.http) as client:
            res = await client.speak("n", text, format=fmt, options={"sync_alignment": True})
    alignments = [e for e in res.events if e["type"] == "alignment"]
    assert len(alignments) > 5 and "".join(c for a in alignments for c in a["chars"]) == text
    offsets = [a["offset_ms"] for a in alignments]
    assert offsets == sorted(offsets) and offsets[-1] > 1000  # continuous, never reset
    native = [round((a["offset_ms"] + t) / 1000, 3) for a in alignments for t in a["charStartTimesMs"]]
    assert native == pytest.approx(http_starts, abs=0.002)
