"""The cheap chunk path: cached per-character frames are byte-identical to synthesizing whole, and the
hand-built audio frame is exactly the JSON the encoder would write (clients and the loadgen rely on it)."""

from __future__ import annotations

import base64
import json

import aiohttp
import pytest
from emulator.formats import new_encoder, parse_output_format
from emulator.framebank import cacheable
from emulator.protocol import audio_frame
from emulator.runner import RunningEmulator
from emulator.speech import iter_chunks, ws_alignment
from emulator.synth import _synthesize_codes, char_code, decode_text, samples_per_char, synthesize

from bench.clients import ContextRecord, b64_len, parse_el_frame
from tests.emulator.wsclient import read

TEXT = "Héllo wörld, the quick brown fox; 日本 ✓ 123. " * 3


@pytest.mark.parametrize("name", ["pcm_24000", "pcm_16000", "pcm_22050", "pcm_44100", "ulaw_8000", "alaw_8000"])
@pytest.mark.parametrize("ms_per_char", [60.0, 25.0, 61.0])
def test_cached_chunks_equal_whole_synthesis(name: str, ms_per_char: float) -> None:
    fmt = parse_output_format(name)
    n = samples_per_char(fmt.sample_rate, ms_per_char)
    assert cacheable(fmt, n)
    chunks = list(iter_chunks(TEXT, fmt, ms_per_char, 500.0))
    encoder = new_encoder(fmt)
    whole = encoder.feed(_synthesize_codes([char_code(c) for c in TEXT], fmt.sample_rate, n)) + encoder.finish()
    assert b"".join(c.audio for c in chunks) == whole
    assert "".join(c.text for c in chunks) == TEXT
    for chunk in chunks:  # precomputed base64 (or the fallback when a segment is not whole quanta)
        assert base64.b64decode(chunk.base64()) == chunk.audio
        assert len(chunk.audio) == len(chunk.text) * n * (2 if fmt.codec == "pcm" else 1)


def test_cached_chunks_still_decode_to_the_text() -> None:
    fmt = parse_output_format("pcm_24000")
    audio = b"".join(c.audio for c in iter_chunks("Your order has shipped.", fmt, 60.0, 500.0))
    assert decode_text(audio, 24000) == "Your order has shipped."


@pytest.mark.parametrize("context_id", [None, "c-1", "ünï\"q"])
@pytest.mark.parametrize("alignment", [None, ws_alignment("ab", 1440, 24000)])
def test_audio_frame_is_what_json_dumps_writes(context_id: str | None, alignment: dict[str, object] | None) -> None:
    frame = {"audio": "QUJD", "isFinal": None, "normalizedAlignment": alignment, "alignment": alignment}
    if context_id is not None:
        frame["contextId"] = context_id
    text = audio_frame(b"QUJD", alignment, context_id).decode()
    assert text == json.dumps(frame)
    fields, audio = parse_el_frame(text)
    assert audio == "QUJD" and b64_len(audio) == 3
    assert fields == {k: v for k, v in frame.items() if k != "audio"}


async def test_loadgen_fast_path_reads_real_frames(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(output_format="pcm_24000")) as ws:
        await ws.send_json({"text": " ", "context_id": "a"})
        await ws.send_json({"text": "Fast path check. ", "context_id": "a", "flush": True})
        await ws.send_json({"context_id": "a", "close_context": True})
        got = await read(ws, finals={"a"})
    assert got.finals() == ["a"]
    total = 0
    for raw in got.raw_text:
        fields, audio = parse_el_frame(raw)
        assert fields == {k: v for k, v in json.loads(raw).items() if k != "audio"}
        if audio:
            total += b64_len(audio)
    assert total == len(got.audio("a")) == len("Fast path check. ") * 1440 * 2


def test_loadgen_content_check_tells_right_from_wrong_audio() -> None:
    def record(voiced: str) -> ContextRecord:
        rec = ContextRecord("c", "whole", expected="Two flights before noon.", kept=[])
        rec.keep(synthesize(voiced, 24000)[:1000])
        rec.keep(synthesize(voiced, 24000)[1000:])
        rec.finish()
        return rec

    assert record("Two flights before noon. ").content_ok() is True  # trailing space voiced, ignored
    assert record("Two flights before moon. ").content_ok() is False
    assert ContextRecord("c", "whole", expected="x").content_ok() is None  # not sampled
