"""Test signals: generated here, so no fixture files to ship."""

from __future__ import annotations

import numpy as np


def sine(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5, phase: float = 0.0) -> bytes:
    """A mono PCM16 sine tone at ``amplitude`` of full scale."""
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t + phase)).round().astype("<i2").tobytes()


def samples(pcm16: bytes) -> np.ndarray:
    """PCM16 bytes as an int64 array, safe to subtract."""
    return np.frombuffer(pcm16, dtype="<i2").astype(np.int64)


def chunked(data: bytes, sizes: tuple[int, ...] = (1, 3, 7, 1001, 2, 5, 4096)) -> list[bytes]:
    """Split ``data`` into chunks cycling through awkward (mostly odd) sizes."""
    out, pos, k = [], 0, 0
    while pos < len(data):
        size = sizes[k % len(sizes)]
        out.append(data[pos : pos + size])
        pos, k = pos + size, k + 1
    return out
