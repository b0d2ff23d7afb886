"""Streaming resampling: length, pitch, level, anti-aliasing and chunking independence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.audio.analysis import dominant_frequency, rms
from shared.audio.resample import StreamResampler

from ._signals import chunked, samples, sine

SOURCE_RATE = 22050
TARGET_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
TONE = sine(1000, SOURCE_RATE)  # below every target's Nyquist, including 8 kHz's 4 kHz


def _run(resampler: StreamResampler, chunks: list[bytes]) -> list[bytes]:
    return [resampler.process(c) for c in chunks] + [resampler.flush()]


@pytest.mark.parametrize("out_rate", TARGET_RATES)
def test_one_second_stays_one_second_at_the_same_pitch(out_rate: int) -> None:
    out = b"".join(_run(StreamResampler(SOURCE_RATE, out_rate), [TONE]))
    assert abs(len(out) // 2 - out_rate) <= out_rate * 0.01
    assert dominant_frequency(out, out_rate) == pytest.approx(1000, abs=1.0)
    assert rms(out) == pytest.approx(rms(TONE), rel=0.01)


@pytest.mark.parametrize("out_rate", TARGET_RATES)
def test_odd_chunks_give_the_whole_buffer_result(out_rate: int) -> None:
    whole = b"".join(_run(StreamResampler(SOURCE_RATE, out_rate), [TONE]))
    parts = _run(StreamResampler(SOURCE_RATE, out_rate), chunked(TONE))
    assert all(len(p) % 2 == 0 for p in parts)
    joined = b"".join(parts)
    assert len(joined) == len(whole)
    # soxr rounds per call, so chunked output may differ from one-shot by an LSB or two, never more.
    assert np.abs(samples(joined) - samples(whole)).max() <= 3


def test_downsampling_filters_instead_of_aliasing() -> None:
    # 6 kHz is above 8 kHz's Nyquist: plain decimation would fold it to an audible 2 kHz tone.
    out = b"".join(_run(StreamResampler(SOURCE_RATE, 8000), [sine(6000, SOURCE_RATE)]))
    assert rms(out) < rms(TONE) * 0.01


def test_equal_rates_pass_through_and_still_carry_odd_bytes() -> None:
    resampler = StreamResampler(24000, 24000)
    assert resampler.passthrough
    assert resampler.process(b"\x01\x02\x03") == b"\x01\x02"
    assert resampler.process(b"\x04") == b"\x03\x04"
    assert resampler.process(b"\x05") == b""
    assert resampler.flush() == b""  # the dangling half sample is not audio
    assert resampler.process(b"\x06\x07") == b"\x06\x07"


def test_flush_resets_for_a_new_stream() -> None:
    resampler = StreamResampler(SOURCE_RATE, 16000)
    first = b"".join(_run(resampler, [TONE]))
    second = b"".join(_run(resampler, [TONE]))
    assert first == second


def test_rejects_nonsense_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 16000)


@settings(max_examples=40, deadline=None)
@given(
    out_rate=st.sampled_from(TARGET_RATES),
    cuts=st.lists(st.integers(min_value=0, max_value=len(TONE) // 4), max_size=12),
)
def test_any_chunking_gives_even_chunks_and_the_same_length(out_rate: int, cuts: list[int]) -> None:
    clip = TONE[: len(TONE) // 4]
    bounds = [0, *sorted(cuts), len(clip)]
    parts = _run(StreamResampler(SOURCE_RATE, out_rate), [clip[a:b] for a, b in itertools.pairwise(bounds)])
    whole = b"".join(_run(StreamResampler(SOURCE_RATE, out_rate), [clip]))
    assert all(len(p) % 2 == 0 for p in parts)
    assert len(b"".join(parts)) == len(whole)
