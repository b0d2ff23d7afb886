"""The synthetic voice: length follows the text, content decodes back to it at every rate and codec."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from emulator.synth import (
    HIGH_TONES_HZ,
    LOW_TONES_HZ,
    SUPPORTED_RATES,
    decode_text,
    samples_per_char,
    synthesize,
)

from shared.audio import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

TEXT = "Hello, world! The quick brown fox jumps over 13 lazy dogs. Ünïcödé façade; tab\tand ~{}|."


@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_every_pcm_rate_round_trips(rate: int) -> None:
    pcm = synthesize(TEXT, rate)
    assert len(pcm) == len(TEXT) * samples_per_char(rate) * 2
    assert decode_text(pcm, rate) == TEXT


def test_duration_follows_ms_per_char() -> None:
    pcm = synthesize("abcd", 16000, ms_per_char=25)
    assert len(pcm) / 2 / 16000 == pytest.approx(4 * 0.025)
    assert decode_text(pcm, 16000, ms_per_char=25) == "abcd"


def test_every_tone_survives_8khz() -> None:
    assert max(LOW_TONES_HZ + HIGH_TONES_HZ) < 0.45 * 8000


def test_all_latin1_and_replacement() -> None:
    # 0x1A is the replacement code itself, so it is left out of the round trip.
    text = "".join(chr(c) for c in range(1, 256) if c != 0x1A) + "日本€"
    expected = text[:-3] + "\ufffd" * 3
    assert decode_text(synthesize(text, 8000), 8000) == expected


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_survives_g711(encode: object, decode: object) -> None:
    pcm = synthesize(TEXT, 8000)
    assert decode_text(decode(encode(pcm)), 8000) == TEXT  # type: ignore[operator]


@pytest.mark.parametrize(("src", "dst"), [(24000, 16000), (44100, 8000), (16000, 48000), (22050, 24000)])
def test_survives_resampling(src: int, dst: int) -> None:
    samples = np.frombuffer(synthesize(TEXT, src), dtype="<i2")
    resampled = soxr.resample(samples, src, dst).astype("<i2").tobytes()
    assert decode_text(resampled, dst) == TEXT


def test_concatenated_clips_decode_as_one() -> None:
    joined = synthesize("first part ", 24000) + synthesize("second", 24000)
    assert decode_text(joined, 24000) == "first part second"


def test_silence_and_empty_input() -> None:
    assert synthesize("", 16000) == b""
    assert decode_text(b"", 16000) == ""
    assert decode_text(bytes(16000 * 2), 16000) == ""  # silence is not text


def test_different_texts_sound_different() -> None:
    assert synthesize("abc", 16000) != synthesize("abd", 16000)
    assert synthesize("abc", 16000) == synthesize("abc", 16000)  # deterministic
