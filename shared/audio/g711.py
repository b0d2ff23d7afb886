"""ITU-T G.711 μ-law and A-law, table-driven with numpy (audioop is gone from Python 3.13).

The arithmetic is the reference one (Sun Microsystems' public-domain g711.c, which CPython's
audioop also used), evaluated once per possible input at import: encoding is then a single
65,536-entry table lookup per sample and decoding a 256-entry one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_ULAW_BIAS = 0x84  # 132: shifts every magnitude so segment boundaries fall on powers of two
_ULAW_CLIP = 8159  # largest 14-bit magnitude μ-law represents

# Upper bounds of the eight segments, in the 14-bit (μ-law) and 13-bit (A-law) domains.
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _all_int16() -> npt.NDArray[np.int32]:
    # Ordered by the uint16 view of each sample, so a uint16 view of the input indexes the table.
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_reference(pcm: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    val = pcm >> 2  # μ-law works on 14 bits; arithmetic shift keeps the reference rounding of negatives
    mask = np.where(val < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(val), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag)  # first segment whose end >= mag
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> (seg + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def _ulaw_decode_reference(codes: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    u = ~codes & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _alaw_encode_reference(pcm: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    val = pcm >> 3  # A-law works on 13 bits
    negative = val < 0
    mask = np.where(negative, 0x55, 0xD5)  # 0x55: even-bit inversion; 0x80 is the sign (set = positive)
    mag = np.where(negative, -val - 1, val)
    seg = np.searchsorted(_ALAW_SEG_END, mag)
    shift = np.where(seg < 2, 1, seg)
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def _alaw_decode_reference(codes: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    a = codes ^ 0x55
    seg = (a & 0x70) >> 4
    t = ((a & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


_CODES = np.arange(256, dtype=np.int32)
ULAW_ENCODE_TABLE: npt.NDArray[np.uint8] = _ulaw_encode_reference(_all_int16())
ALAW_ENCODE_TABLE: npt.NDArray[np.uint8] = _alaw_encode_reference(_all_int16())
ULAW_DECODE_TABLE: npt.NDArray[np.int16] = _ulaw_decode_reference(_CODES)
ALAW_DECODE_TABLE: npt.NDArray[np.int16] = _alaw_decode_reference(_CODES)
for _table in (ULAW_ENCODE_TABLE, ALAW_ENCODE_TABLE, ULAW_DECODE_TABLE, ALAW_DECODE_TABLE):
    _table.flags.writeable = False  # shared by every stream in the process


def _samples(pcm16: bytes) -> npt.NDArray[np.uint16]:
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 input must be a whole number of samples, got {len(pcm16)} bytes")
    return np.frombuffer(pcm16, dtype="<u2")


def ulaw_encode(pcm16: bytes) -> bytes:
    """Encode signed 16-bit little-endian PCM to G.711 μ-law, one byte per sample."""
    return ULAW_ENCODE_TABLE[_samples(pcm16)].tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """Decode G.711 μ-law to signed 16-bit little-endian PCM."""
    return ULAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def alaw_encode(pcm16: bytes) -> bytes:
    """Encode signed 16-bit little-endian PCM to G.711 A-law, one byte per sample."""
    return ALAW_ENCODE_TABLE[_samples(pcm16)].tobytes()


def alaw_decode(data: bytes) -> bytes:
    """Decode G.711 A-law to signed 16-bit little-endian PCM."""
    return ALAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()
