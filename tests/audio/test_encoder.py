"""OutputEncoder: every supported format from every likely source rate, fed in awkward chunks."""

from __future__ import annotations

import pytest

from shared.audio.analysis import decode_to_pcm16, dominant_frequency, duration_seconds, rms
from shared.audio.encoder import OutputEncoder
from shared.audio.formats import SUPPORTED_FORMATS, AudioFormat, parse_format
from shared.audio.mp3frames import iter_frames, whole_frames_length
from shared.audio.wav import HEADER_SIZE, streaming_wav_header

from ._signals import chunked, sine

# ElevenLabs' native PCM rates and Piper's usual 22050 Hz.
SOURCE_RATES = (16000, 22050, 24000, 44100)
ALL_FORMATS = [parse_format(n) for n in SUPPORTED_FORMATS]
TONE_HZ = 440


def _encode(source_rate: int, fmt: AudioFormat, pcm: bytes) -> list[bytes]:
    encoder = OutputEncoder(source_rate, fmt)
    return [encoder.feed(c) for c in chunked(pcm)] + [encoder.finish()]


@pytest.mark.parametrize("source_rate", SOURCE_RATES)
@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f.name)
def test_one_second_in_every_format(source_rate: int, fmt: AudioFormat) -> None:
    pcm = sine(TONE_HZ, source_rate)
    chunks = _encode(source_rate, fmt, pcm)
    stream = b"".join(chunks)
    decoded, rate = decode_to_pcm16(stream, fmt)
    assert rate == fmt.sample_rate
    if fmt.codec == "mp3":
        # LAME's encoder delay and end padding: see test_mp3.
        assert 1.0 <= duration_seconds(stream, fmt) <= 1.0 + 3 * 1152 / fmt.sample_rate
        assert all(whole_frames_length(c) == len(c) for c in chunks)
    elif fmt.codec in ("opus", "aac", "flac"):
        # Opus and FLAC are sample-exact (Ogg pre-skip); ADTS cannot signal AAC's encoder priming, so up
        # to two frames of 1024 samples more come out. Whole pages/frames per chunk: see test_avcodec.
        slack = 2 * 1024 / fmt.sample_rate if fmt.codec == "aac" else 0.01
        assert 1.0 - 0.01 <= duration_seconds(stream, fmt) <= 1.0 + slack + 0.01
    else:
        assert duration_seconds(stream, fmt) == pytest.approx(1.0, abs=0.01)
        width = fmt.bytes_per_sample
        assert width is not None
        assert all(len(c) % width == 0 for c in chunks)  # the 44-byte WAV header keeps PCM aligned too
    assert dominant_frequency(decoded, rate) == pytest.approx(TONE_HZ, abs=2.0)
    assert rms(decoded) == pytest.approx(rms(pcm), rel=0.1)


@pytest.mark.parametrize("rate", [8000, 24000, 48000])
def test_wav_has_exactly_one_header_and_it_comes_first(rate: int) -> None:
    fmt = parse_format(f"wav_{rate}")
    encoder = OutputEncoder(22050, fmt)
    first = encoder.feed(b"\x01")  # nothing audible yet, but the client can start its player
    assert first == streaming_wav_header(rate)
    rest = [encoder.feed(c) for c in chunked(sine(TONE_HZ, 22050))] + [encoder.finish()]
    stream = first + b"".join(rest)
    assert stream.count(b"RIFF") == 1
    assert all(len(c) % 2 == 0 for c in rest)
    assert len(stream) - HEADER_SIZE == pytest.approx(2 * rate, rel=0.01)


def test_empty_wav_stream_is_still_a_header() -> None:
    encoder = OutputEncoder(24000, parse_format("wav_24000"))
    assert encoder.finish() == streaming_wav_header(24000)


def test_empty_mp3_stream_is_empty() -> None:
    assert OutputEncoder(24000, parse_format("mp3_44100_64")).finish() == b""
    encoder = OutputEncoder(24000, parse_format("mp3_44100_64"))
    assert encoder.feed(b"\x00") == b""  # half a sample never reaches LAME
    assert encoder.finish() == b""


@pytest.mark.parametrize("name", ["ulaw_8000", "alaw_8000"])
def test_g711_from_24k_is_eight_k_one_byte_per_sample(name: str) -> None:
    stream = b"".join(_encode(24000, parse_format(name), sine(TONE_HZ, 24000)))
    assert len(stream) == pytest.approx(8000, abs=80)


def test_passthrough_returns_the_input_bytes_sample_aligned() -> None:
    encoder = OutputEncoder(24000, parse_format("pcm_24000"))
    assert encoder.passthrough
    pcm = sine(TONE_HZ, 24000, seconds=0.1)
    parts = [encoder.feed(c) for c in chunked(pcm)] + [encoder.finish()]
    assert b"".join(parts) == pcm
    assert all(len(p) % 2 == 0 for p in parts)
    assert not OutputEncoder(24000, parse_format("wav_24000")).passthrough
    assert not OutputEncoder(22050, parse_format("pcm_24000")).passthrough


def test_mp3_frames_keep_the_target_rate_whatever_the_source() -> None:
    stream = b"".join(_encode(16000, parse_format("mp3_44100_128"), sine(TONE_HZ, 16000)))
    assert {h.sample_rate for _, h in iter_frames(stream)} == {44100}


def test_feed_after_finish_is_an_error_and_finish_is_idempotent() -> None:
    encoder = OutputEncoder(24000, parse_format("ulaw_8000"))
    encoder.feed(sine(TONE_HZ, 24000, seconds=0.1))
    encoder.finish()
    assert encoder.finish() == b""
    with pytest.raises(RuntimeError):
        encoder.feed(b"\x00\x00")
