"""Streaming MP3: whole frames per chunk, decodable when cut, at the requested rate, bitrate and pitch."""

from __future__ import annotations

import pytest

from shared.audio.analysis import decode_mp3, dominant_frequency
from shared.audio.formats import SUPPORTED_FORMATS, AudioFormat, parse_format
from shared.audio.mp3 import Mp3StreamEncoder
from shared.audio.mp3frames import iter_frames, parse_frame_header, whole_frames_length

from ._signals import chunked, sine

MP3_FORMATS = [parse_format(n) for n in SUPPORTED_FORMATS if n.startswith("mp3_")]
# LAME starts with 576 samples of encoder delay and pads the end to whole frames (the decoder does
# not trim either without a LAME tag, which a stream cannot carry), so decoded audio is longer than
# its input by less than the delay plus two frames: up to 7 % of one second at MPEG-2 rates.
LAME_DELAY = 576


def _encode(rate: int, kbps: int, pcm: bytes) -> list[bytes]:
    encoder = Mp3StreamEncoder(rate, kbps)
    return [encoder.encode(c) for c in chunked(pcm, (1, 961, 4800, 3))] + [encoder.flush()]


def test_frame_header_parser_reference_values() -> None:
    v1 = parse_frame_header(bytes.fromhex("fffb9064"))
    assert v1 is not None
    assert (v1.mpeg_version, v1.sample_rate, v1.bitrate_kbps, v1.channels) == (1.0, 44100, 128, 2)
    assert (v1.frame_length, v1.samples_per_frame) == (417, 1152)
    v2 = parse_frame_header(bytes.fromhex("fff342c4"))  # padded MPEG-2, mono
    assert v2 is not None
    assert (v2.mpeg_version, v2.sample_rate, v2.bitrate_kbps, v2.channels) == (2.0, 22050, 32, 1)
    assert (v2.frame_length, v2.samples_per_frame) == (105, 576)
    for not_a_header in (
        b"",
        b"\xff\xfb\x90",
        b"ID3\x04",
        bytes.fromhex("fffbf064"),
        bytes.fromhex("fffd9064"),
    ):
        assert parse_frame_header(not_a_header) is None


@pytest.mark.parametrize("fmt", MP3_FORMATS, ids=lambda f: f.name)
def test_chunks_are_whole_frames_at_the_requested_rate_and_bitrate(fmt: AudioFormat) -> None:
    assert fmt.bitrate_kbps is not None
    chunks = _encode(fmt.sample_rate, fmt.bitrate_kbps, sine(440, fmt.sample_rate))
    assert sum(1 for c in chunks if c) > 10  # streamed as it goes, not held to the end
    for chunk in chunks:
        assert whole_frames_length(chunk) == len(chunk)
    headers = [h for _, h in iter_frames(b"".join(chunks))]
    assert {(h.sample_rate, h.bitrate_kbps, h.channels) for h in headers} == {
        (fmt.sample_rate, fmt.bitrate_kbps, 1)
    }


@pytest.mark.parametrize("fmt", MP3_FORMATS, ids=lambda f: f.name)
def test_one_second_decodes_to_one_second_at_the_same_pitch(fmt: AudioFormat) -> None:
    assert fmt.bitrate_kbps is not None
    pcm = sine(440, fmt.sample_rate)
    stream = b"".join(_encode(fmt.sample_rate, fmt.bitrate_kbps, pcm))
    decoded, rate = decode_mp3(stream)
    assert rate == fmt.sample_rate
    samples_per_frame = next(iter_frames(stream))[1].samples_per_frame
    assert len(pcm) // 2 <= len(decoded) // 2 <= len(pcm) // 2 + LAME_DELAY + 2 * samples_per_frame
    assert dominant_frequency(decoded, rate) == pytest.approx(440, abs=2.0)


def test_stream_cut_at_any_frame_or_chunk_boundary_still_decodes() -> None:
    chunks = _encode(44100, 64, sine(440, 44100))
    stream = b"".join(chunks)
    offsets = [offset for offset, _ in iter_frames(stream)]
    assert whole_frames_length(stream) == len(stream)
    for cut_frame in (1, len(offsets) // 2, len(offsets) - 1):
        decoded, rate = decode_mp3(stream[: offsets[cut_frame]])
        assert (len(decoded) // 2, rate) == (cut_frame * 1152, 44100)
    # A listener cancelled after any chunk holds a valid prefix.
    prefix = b"".join(chunks[: len(chunks) // 2])
    assert len(decode_mp3(prefix)[0]) // 2 == len(list(iter_frames(prefix))) * 1152


def test_odd_byte_chunks_and_end_of_stream() -> None:
    encoder = Mp3StreamEncoder(24000, 48)
    assert encoder.encode(b"\x00") == b""
    out = encoder.encode(b"\x00" * 24001) + encoder.flush()
    assert whole_frames_length(out) == len(out) > 0
    assert encoder.flush() == b""
    with pytest.raises(RuntimeError):
        encoder.encode(b"\x00\x00")
