"""RIFF/WAVE headers: one streaming header per stream, never one per chunk (§4.7)."""

from __future__ import annotations

import struct

# ffmpeg, browsers and most players read 0xFFFFFFFF sizes as "until the end of the stream".
UNKNOWN_SIZE = 0xFFFFFFFF
HEADER_SIZE = 44
_WAVE_FORMAT_PCM = 1


def wav_header(sample_rate: int, data_len: int, channels: int = 1, bits_per_sample: int = 16) -> bytes:
    """Return the 44-byte canonical PCM WAV header for ``data_len`` bytes of sample data."""
    if not 0 <= data_len <= UNKNOWN_SIZE - (HEADER_SIZE - 8):
        raise ValueError(f"data_len {data_len} does not fit a RIFF header")
    return _header(sample_rate, channels, bits_per_sample, data_len + HEADER_SIZE - 8, data_len)


def streaming_wav_header(sample_rate: int, channels: int = 1, bits_per_sample: int = 16) -> bytes:
    """Return a 44-byte PCM WAV header for a stream of unknown length (RIFF and data sizes 0xFFFFFFFF)."""
    return _header(sample_rate, channels, bits_per_sample, UNKNOWN_SIZE, UNKNOWN_SIZE)


def _header(sample_rate: int, channels: int, bits_per_sample: int, riff_size: int, data_size: int) -> bytes:
    if sample_rate <= 0 or channels <= 0 or bits_per_sample <= 0 or bits_per_sample % 8:
        raise ValueError(f"bad WAV parameters: rate={sample_rate} channels={channels} bits={bits_per_sample}")
    block_align = channels * bits_per_sample // 8
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,
        _WAVE_FORMAT_PCM,
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        bits_per_sample,
        b"data",
        data_size,
    )
