"""WAV headers: one streaming header that real parsers accept, and decoding that tolerates it."""

from __future__ import annotations

import io
import struct
import wave

import pytest

from shared.audio.analysis import decode_to_pcm16, decode_wav
from shared.audio.formats import parse_format
from shared.audio.wav import HEADER_SIZE, UNKNOWN_SIZE, streaming_wav_header, wav_header

from ._signals import sine


def _fix_sizes(stream: bytes) -> bytes:
    """What a player that buffered the whole stream would know: the real RIFF and data sizes."""
    data_len = len(stream) - HEADER_SIZE
    return (
        stream[:4]
        + struct.pack("<I", len(stream) - 8)
        + stream[8:40]
        + struct.pack("<I", data_len)
        + stream[44:]
    )


def test_streaming_header_layout() -> None:
    header = streaming_wav_header(24000)
    assert len(header) == HEADER_SIZE
    riff, riff_size, wave_id, fmt_id, fmt_size = struct.unpack_from("<4sI4s4sI", header)
    assert (riff, wave_id, fmt_id, fmt_size) == (b"RIFF", b"WAVE", b"fmt ", 16)
    tag, channels, rate, byte_rate, align, bits = struct.unpack_from("<HHIIHH", header, 20)
    assert (tag, channels, rate, byte_rate, align, bits) == (1, 1, 24000, 48000, 2, 16)
    data_id, data_size = struct.unpack_from("<4sI", header, 36)
    assert data_id == b"data"
    assert riff_size == data_size == UNKNOWN_SIZE


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_streaming_header_parses_with_wave_once_sizes_are_fixed(rate: int) -> None:
    pcm = sine(440, rate, seconds=0.25)
    with wave.open(io.BytesIO(_fix_sizes(streaming_wav_header(rate) + pcm))) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, rate)
        assert reader.getnframes() == len(pcm) // 2
        assert reader.readframes(reader.getnframes()) == pcm


def test_known_length_header_parses_with_wave_as_is() -> None:
    pcm = sine(440, 16000, seconds=0.1)
    stereo_header = wav_header(16000, 0, channels=2)
    assert struct.unpack_from("<HHIIHH", stereo_header, 20)[1:5] == (2, 16000, 64000, 4)
    with wave.open(io.BytesIO(wav_header(16000, len(pcm)) + pcm)) as reader:
        assert reader.getframerate() == 16000
        assert reader.readframes(10**6) == pcm


def test_known_length_header_matches_what_wave_writes() -> None:
    pcm = sine(440, 16000, seconds=0.1)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(pcm)
    assert buffer.getvalue() == wav_header(16000, len(pcm)) + pcm


def test_decode_tolerates_the_streaming_form_and_a_cut_mid_sample() -> None:
    pcm = sine(440, 22050, seconds=0.2)
    stream = streaming_wav_header(22050) + pcm
    assert decode_to_pcm16(stream, parse_format("wav_22050")) == (pcm, 22050)
    assert decode_wav(stream[:-1]) == (pcm[:-2], 22050)
    assert decode_wav(streaming_wav_header(22050)) == (b"", 22050)


def test_decode_skips_other_chunks_and_downmixes_extensible_stereo() -> None:
    # What sox/ffmpeg write: WAVE_FORMAT_EXTENSIBLE, a LIST chunk of odd length (so a pad byte), then data.
    left_right = struct.pack("<4h", 100, 300, -100, -300)
    fmt = struct.pack("<HHIIHHHHI16s", 0xFFFE, 2, 8000, 32000, 4, 16, 22, 16, 3, b"\x01" + b"\x00" * 15)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 3) + b"abc\x00"
    chunks += b"data" + struct.pack("<I", len(left_right)) + left_right
    data = b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks
    assert decode_wav(data) == (struct.pack("<2h", 200, -200), 8000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RIFX" + b"\x00" * 40, "not a RIFF"),
        (b"RIFF\xff\xff\xff\xffWAVEdata\x00\x00\x00\x00", "before its fmt"),
        (wav_header(8000, 0, bits_per_sample=8), "16-bit"),
        (wav_header(8000, 0)[:36], "no data chunk"),
    ],
)
def test_decode_rejects_what_it_cannot_read(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_wav(data)


def test_header_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        wav_header(8000, -1)
    with pytest.raises(ValueError):
        streaming_wav_header(8000, bits_per_sample=12)
