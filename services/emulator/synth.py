"""Deterministic synthetic "speech": one dual-tone segment per character, and its exact inverse.

Each character becomes ``ms_per_char`` of audio holding two sine tones, DTMF-style: the high nibble
of its Latin-1 code picks one of 16 low-band tones, the low nibble one of 16 high-band tones. Every
tone is below 3.4 kHz, so the code survives 8 kHz formats, G.711 and resampling. The duration of a
clip is therefore ``len(text) * ms_per_char`` and :func:`decode_text` recovers the text from it,
which lets a test prove that each of many concurrent sessions received its own audio.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

DEFAULT_MS_PER_CHAR = 60.0
SUPPORTED_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 32000, 44100, 48000)

# 80 Hz and 112 Hz spacing stay resolvable in the 16 ms window a 20 ms character leaves after ramps;
# the 200 Hz gap between the bands keeps one band's tone out of the other's detector.
LOW_TONES_HZ: tuple[float, ...] = tuple(300.0 + 80.0 * i for i in range(16))
HIGH_TONES_HZ: tuple[float, ...] = tuple(1700.0 + 112.0 * i for i in range(16))

# Characters outside Latin-1 are voiced as this code (ASCII SUB) and decoded as U+FFFD.
REPLACEMENT_CODE = 0x1A
REPLACEMENT_CHAR = "\ufffd"

_TONE_AMPLITUDE = 0.3 * 32767  # two tones peak at 0.6 full scale: headroom for resamplers' overshoot
_MAX_RAMP_MS = 4.0  # raised-cosine edges: no clicks, so no broadband energy between segments
_SILENCE_RMS = 0.02 * _TONE_AMPLITUDE  # below this a segment is padding, not a character


def samples_per_char(sample_rate: int, ms_per_char: float = DEFAULT_MS_PER_CHAR) -> int:
    """Samples one character occupies at ``sample_rate`` (the same rounding synthesis and decoding use)."""
    if sample_rate <= 0 or ms_per_char <= 0:
        raise ValueError(f"sample_rate and ms_per_char must be positive, got {sample_rate}, {ms_per_char}")
    return max(1, round(sample_rate * ms_per_char / 1000.0))


def char_code(char: str) -> int:
    """The 8-bit code voiced for ``char`` (its Latin-1 value, else the replacement code)."""
    code = ord(char)
    return code if code < 256 else REPLACEMENT_CODE


@lru_cache(maxsize=64)
def _envelope(n: int, sample_rate: int) -> npt.NDArray[np.float64]:
    ramp = min(n // 4, max(1, round(sample_rate * _MAX_RAMP_MS / 1000.0)))
    env = np.ones(n)
    edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
    env[:ramp] = edge
    env[n - ramp :] = edge[::-1]
    return env


# Segments up to this many samples are cached (8 KB each, so 1024 entries stay under 8.5 MB);
# longer ones (ms_per_char far above the 60 ms default) are synthesized on every call.
MAX_CACHED_SEGMENT_SAMPLES = 4096


def synthesize(text: str, sample_rate: int, ms_per_char: float = DEFAULT_MS_PER_CHAR) -> bytes:
    """Return PCM16 LE mono audio for ``text``: ``len(text)`` segments of ``samples_per_char`` samples."""
    n = samples_per_char(sample_rate, ms_per_char)
    if not text:
        return b""
    if n <= MAX_CACHED_SEGMENT_SAMPLES:
        # Each segment depends only on its character, so the clip is the join of cached segments:
        # byte-identical to synthesizing it whole, and ~100x cheaper (the load tests' hot path).
        return b"".join([char_segment(char_code(c), sample_rate, n) for c in text])
    return _synthesize_codes([char_code(c) for c in text], sample_rate, n)


@lru_cache(maxsize=1024)
def char_segment(code: int, sample_rate: int, n: int) -> bytes:
    """PCM16 of one character code: ``n`` samples at ``sample_rate`` (cached; see :func:`synthesize`)."""
    return _synthesize_codes([code], sample_rate, n)


def _synthesize_codes(code_list: list[int], sample_rate: int, n: int) -> bytes:
    codes = np.array(code_list, dtype=np.int64)
    low = np.asarray(LOW_TONES_HZ)[codes >> 4]
    high = np.asarray(HIGH_TONES_HZ)[codes & 0x0F]
    phase = 2.0 * np.pi * np.arange(n) / sample_rate
    tones = np.sin(np.outer(low, phase)) + np.sin(np.outer(high, phase))
    audio = tones * _envelope(n, sample_rate) * _TONE_AMPLITUDE
    return np.rint(audio).astype("<i2").tobytes()


@lru_cache(maxsize=64)
def _detector(n: int, sample_rate: int) -> tuple[slice, npt.NDArray[np.complex128]]:
    # Analyse only the middle of each segment: its edges hold the ramps and, after resampling or
    # G.711, the smear from the neighbouring characters.
    start, stop = n // 8, n - n // 8
    t = np.arange(start, stop) / sample_rate
    freqs = np.asarray(LOW_TONES_HZ + HIGH_TONES_HZ)
    window = np.hanning(stop - start)
    basis = np.exp(-2j * np.pi * np.outer(t, freqs)) * window[:, None]
    return slice(start, stop), basis.astype(np.complex128)


def decode_codes(pcm16: bytes, sample_rate: int, ms_per_char: float = DEFAULT_MS_PER_CHAR) -> list[int]:
    """Return the character codes voiced in clean PCM16 audio, silent segments skipped."""
    n = samples_per_char(sample_rate, ms_per_char)
    samples = np.frombuffer(pcm16[: len(pcm16) - len(pcm16) % 2], dtype="<i2").astype(np.float64)
    count = round(samples.size / n)
    if count == 0:
        return []
    total = count * n
    # A trailing partial segment under half a character is padding; a longer one is zero-filled.
    if samples.size < total:
        samples = np.pad(samples, (0, total - samples.size))
    segments = samples[:total].reshape(count, n)
    window, basis = _detector(n, sample_rate)
    core = segments[:, window]
    power = np.abs(core @ basis) ** 2
    rms = np.sqrt(np.mean(core * core, axis=1))
    low = np.argmax(power[:, :16], axis=1)
    high = np.argmax(power[:, 16:], axis=1)
    return [int(lo) << 4 | int(hi) for lo, hi, level in zip(low, high, rms) if level >= _SILENCE_RMS]


def decode_text(pcm16: bytes, sample_rate: int, ms_per_char: float = DEFAULT_MS_PER_CHAR) -> str:
    """Recover the text that :func:`synthesize` voiced into ``pcm16`` (non-Latin-1 comes back as U+FFFD)."""
    return "".join(
        REPLACEMENT_CHAR if code == REPLACEMENT_CODE else chr(code)
        for code in decode_codes(pcm16, sample_rate, ms_per_char)
    )


def duration_ms(chars: int, sample_rate: int, ms_per_char: float = DEFAULT_MS_PER_CHAR) -> float:
    """Exact playing time in ms of ``chars`` characters at ``sample_rate``."""
    return chars * samples_per_char(sample_rate, ms_per_char) * 1000.0 / sample_rate
