"""Ogg Opus, ADTS AAC and FLAC through PyAV: streamed, cut-safe, decoded back, and timed by PlayClock."""

from __future__ import annotations

import pytest

from shared.audio.analysis import decode_to_pcm16, dominant_frequency, duration_seconds
from shared.audio.clock import PlayClock
from shared.audio.encoder import OutputEncoder
from shared.audio.formats import AudioFormat, parse_format

from ._signals import chunked, sine

NEW = [parse_format(n) for n in ("opus_48000_32", "opus_48000_192", "aac_24000_64", "aac_44100_128",
                                 "flac_24000", "flac_8000", "flac_48000")]
TIMED = NEW + [parse_format(n) for n in ("mp3_44100_128", "mp3_22050_32", "pcm_24000", "wav_16000",
                                         "ulaw_8000")]


def _stream(fmt: AudioFormat, seconds: float = 2.0, source_rate: int = 24000) -> list[bytes]:
    encoder = OutputEncoder(source_rate, fmt)
    # 100 ms pieces, as a provider delivers them (the awkward sizes are covered by test_encoder).
    step = source_rate // 10 * 2
    pcm = sine(440, source_rate, seconds)
    return [encoder.feed(pcm[i:i + step]) for i in range(0, len(pcm), step)] + [encoder.finish()]


@pytest.mark.parametrize("fmt", NEW, ids=lambda f: f.name)
def test_output_comes_while_input_streams_not_at_the_end(fmt: AudioFormat) -> None:
    chunks = _stream(fmt)
    produced = [i for i, c in enumerate(chunks[:-1]) if c]
    # Something goes out within the first ~300 ms of input and from then on steadily (not all at finish).
    assert produced and produced[0] <= 3
    assert len(produced) >= 10  # of 19: a 1152-sample FLAC block at 8 kHz spans 144 ms
    assert len(chunks[-1]) < len(b"".join(chunks)) / 4


@pytest.mark.parametrize("fmt", NEW, ids=lambda f: f.name)
def test_every_chunk_boundary_is_a_valid_cut(fmt: AudioFormat) -> None:
    """A client that stops reading after any chunk holds a stream FFmpeg decodes (§4.7)."""
    chunks = [c for c in _stream(fmt) if c]
    if fmt.codec == "opus":
        assert all(c.startswith(b"OggS") for c in chunks)
    elif fmt.codec == "aac":
        assert all(c[0] == 0xFF and c[1] & 0xF6 == 0xF0 for c in chunks)  # ADTS sync, layer 0
    else:
        assert chunks[0].startswith(b"fLaC")
        assert all(c[0] == 0xFF and c[1] & 0xFE == 0xF8 for c in chunks[1:])  # FLAC frame sync
    for cut in (2, len(chunks) // 2, len(chunks) - 1):
        prefix = b"".join(chunks[:cut])
        decoded, rate = decode_to_pcm16(prefix, fmt)
        assert rate == fmt.sample_rate
        assert len(decoded) > 0
        assert dominant_frequency(decoded, rate) == pytest.approx(440, abs=3)


@pytest.mark.parametrize("fmt", NEW, ids=lambda f: f.name)
def test_whole_stream_decodes_to_the_input_duration(fmt: AudioFormat) -> None:
    stream = b"".join(_stream(fmt, seconds=2.0))
    slack = 2 * 1024 / fmt.sample_rate if fmt.codec == "aac" else 0.0  # ADTS cannot signal AAC priming
    assert 2.0 - 0.01 <= duration_seconds(stream, fmt) <= 2.0 + slack + 0.01


@pytest.mark.parametrize("fmt", TIMED, ids=lambda f: f.name)
def test_play_clock_says_where_each_chunk_starts(fmt: AudioFormat) -> None:
    """PlayClock's start of each chunk == the decoded duration of everything before it."""
    chunks = [c for c in _stream(fmt) if c]
    clock = PlayClock(fmt)
    sent = b""
    for chunk in chunks:
        start = clock.advance(chunk)
        before = duration_seconds(sent, fmt) if sent else 0.0
        # MP3: a cut stream decodes one frame short of what was sent (the decoder's own look-ahead).
        tolerance = 1152 / fmt.sample_rate if fmt.codec == "mp3" else 0.002
        assert start == pytest.approx(before, abs=tolerance)
        sent += chunk
    assert clock.seconds > 1.5


@pytest.mark.parametrize("fmt", [parse_format(n) for n in ("opus_48000_64", "aac_24000_64", "flac_24000")],
                         ids=lambda f: f.name)
def test_an_empty_clip_is_an_empty_stream(fmt: AudioFormat) -> None:
    encoder = OutputEncoder(24000, fmt)
    stream = encoder.finish()
    decoded, _ = decode_to_pcm16(stream, fmt)
    assert decoded == b""
    if fmt.codec == "opus":
        assert stream.startswith(b"OggS") and b"OpusHead" in stream  # headers even with no audio
    with pytest.raises(RuntimeError):
        encoder.feed(b"\x00\x00")


def test_chunks_of_any_size_including_odd_bytes() -> None:
    fmt = parse_format("opus_48000_64")
    encoder = OutputEncoder(22050, fmt)
    stream = b"".join([encoder.feed(c) for c in chunked(sine(300, 22050))] + [encoder.finish()])
    decoded, rate = decode_to_pcm16(stream, fmt)
    assert len(decoded) / 2 / rate == pytest.approx(1.0, abs=0.01)
    assert dominant_frequency(decoded, rate) == pytest.approx(300, abs=3)


def test_warm_up_initialises_every_codec() -> None:
    """What a worker runs in a thread at start (FFmpeg's first load must not stall its event loop)."""
    from shared.audio.avcodec import warm_up

    warm_up()  # raises if any encoder is missing from the installed PyAV build
