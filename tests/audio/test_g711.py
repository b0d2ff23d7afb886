"""G.711 μ-law / A-law against the ITU reference arithmetic and CPython's C audioop."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from shared.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

from ._signals import samples, sine

ALL_PCM = np.arange(-32768, 32768, dtype=np.int64)
ALL_PCM_BYTES = ALL_PCM.astype("<i2").tobytes()
ALL_CODES = bytes(range(256))

Codec = Callable[[bytes], bytes]


def _audioop() -> ModuleType:
    # CPython's C implementation of the same G.711 arithmetic: stdlib up to 3.12 (deprecated, hence the
    # filter), the `audioop-lts` package from 3.13 on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module("audioop")


def test_silence_codes() -> None:
    assert ulaw_encode(b"\x00\x00") == b"\xff"
    assert alaw_encode(b"\x00\x00") == b"\xd5"
    assert samples(ulaw_decode(b"\xff\x7f")).tolist() == [0, 0]  # μ-law has a +0 and a -0
    assert samples(alaw_decode(b"\xd5\x55")).tolist() == [8, -8]  # A-law has no zero: ±half a step


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (0x80, 32124),
        (0x00, -32124),
        (0xFE, 8),
        (0x7E, -8),
        (0xF0, 120),
        (0xEF, 132),
        (0xDF, 396),
        (0x8F, 16764),
    ],
)
def test_ulaw_decode_reference_values(code: int, value: int) -> None:
    assert samples(ulaw_decode(bytes([code]))).tolist() == [value]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xAA, 32256), (0x2A, -32256), (0xD5, 8), (0xD4, 24), (0xC5, 264), (0xFA, 1008), (0x55, -8)],
)
def test_alaw_decode_reference_values(code: int, value: int) -> None:
    assert samples(alaw_decode(bytes([code]))).tolist() == [value]


@pytest.mark.parametrize(
    ("value", "ulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),
        (-1, 0x7E, 0x55),
        (32767, 0x80, 0xAA),
        (-32768, 0x00, 0x2A),
        (8, 0xFE, 0xD5),
        (1000, 0xCE, 0xFA),
    ],
)
def test_encode_reference_values(value: int, ulaw: int, alaw: int) -> None:
    pcm = np.array([value], dtype="<i2").tobytes()
    assert ulaw_encode(pcm) == bytes([ulaw])
    assert alaw_encode(pcm) == bytes([alaw])


def test_every_input_matches_audioop() -> None:
    audioop = _audioop()
    assert ulaw_encode(ALL_PCM_BYTES) == audioop.lin2ulaw(ALL_PCM_BYTES, 2)
    assert alaw_encode(ALL_PCM_BYTES) == audioop.lin2alaw(ALL_PCM_BYTES, 2)
    assert ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_decode_tables_are_monotonic() -> None:
    # μ-law: 0x00..0x7F run from most negative up to -0, 0x80..0xFF from most positive down to +0.
    ulaw = samples(ulaw_decode(ALL_CODES))
    assert np.all(np.diff(ulaw[:128]) > 0) and np.all(np.diff(ulaw[128:]) < 0)
    # A-law after undoing the even-bit inversion: sign bit clear is negative, magnitude grows with the code.
    alaw = samples(alaw_decode(bytes(c ^ 0x55 for c in range(256))))
    assert np.all(np.diff(alaw[:128]) < 0) and np.all(np.diff(alaw[128:]) > 0)


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_quantisation_is_ordered_and_decodes_inside_each_interval(encode: Codec, decode: Codec) -> None:
    levels = samples(decode(encode(ALL_PCM_BYTES)))
    # Quantising never reorders two inputs: each code owns one contiguous interval of inputs.
    assert np.all(np.diff(levels) >= 0)
    for level in np.unique(levels):
        owned = ALL_PCM[levels == level]
        assert owned.min() - 1 <= level <= owned.max() + 1  # the ±8 A-law zero codes sit one step out


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_round_trip_error_bound(encode: Codec, decode: Codec) -> None:
    error = np.abs(samples(decode(encode(ALL_PCM_BYTES))) - ALL_PCM)
    # Logarithmic quantisation: the error grows with the level, about half a step (1/32 of it) plus a floor.
    assert np.all(error <= np.abs(ALL_PCM) / 16 + 16)
    quiet = np.abs(ALL_PCM) < 64
    assert error[quiet].max() <= 8  # small signals keep ~13-bit resolution: the point of companding


def test_decoded_codes_re_encode_to_themselves() -> None:
    assert ulaw_encode(ulaw_decode(ALL_CODES)) == ALL_CODES.replace(b"\x7f", b"\xff")  # -0 becomes +0
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
@pytest.mark.parametrize(("amplitude", "min_snr_db"), [(0.9, 38.0), (0.5, 38.0), (0.1, 38.0), (0.01, 30.0)])
def test_sine_round_trip_snr(encode: Codec, decode: Codec, amplitude: float, min_snr_db: float) -> None:
    pcm = sine(1000, 8000, amplitude=amplitude, phase=0.3)
    encoded = encode(pcm)
    assert len(encoded) == len(pcm) // 2
    x, y = samples(pcm).astype(float), samples(decode(encoded)).astype(float)
    snr = 10 * np.log10(np.sum(x * x) / np.sum((x - y) ** 2))
    # A linear 8-bit code would give ~10 dB at -40 dBFS; companding holds G.711's ~38 dB down to -20 dBFS.
    assert snr >= min_snr_db


@pytest.mark.parametrize("encode", [ulaw_encode, alaw_encode])
def test_partial_sample_is_refused(encode: Codec) -> None:
    with pytest.raises(ValueError, match="whole number of samples"):
        encode(b"\x00\x00\x00")
    assert encode(b"") == b""
