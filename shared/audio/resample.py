"""Streaming sample-rate conversion of PCM16 mono with soxr (a mismatch shifts pitch; §4.6)."""

from __future__ import annotations

import numpy as np
import soxr

from shared.audio.align import SampleAligner
from shared.audio.formats import PCM_SAMPLE_WIDTH

# soxr's "HQ" is its default 20-bit quality: inaudible error for speech, and still far faster than
# real time per stream; "VHQ" costs more for nothing a listener of TTS can hear.
_QUALITY = "HQ"


class StreamResampler:
    """Resample a PCM16 mono stream chunk by chunk; chunks of any byte length are accepted."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        """Convert from ``in_rate`` to ``out_rate`` Hz; equal rates pass bytes straight through."""
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._aligner = SampleAligner(PCM_SAMPLE_WIDTH)
        self._stream = self._new_stream()

    def _new_stream(self) -> soxr.ResampleStream | None:
        if self.in_rate == self.out_rate:
            return None
        return soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="int16", quality=_QUALITY)

    @property
    def passthrough(self) -> bool:
        """True when no conversion happens (rates equal)."""
        return self._stream is None

    def process(self, pcm16: bytes) -> bytes:
        """Feed one chunk; return whatever output is ready (always a whole number of samples)."""
        whole = self._aligner.take(pcm16)
        if self._stream is None or not whole:
            return whole
        samples = np.frombuffer(whole, dtype="<i2")
        out: np.ndarray = self._stream.resample_chunk(samples)
        return out.astype("<i2", copy=False).tobytes()

    def flush(self) -> bytes:
        """End the stream: return the filter's tail and reset, so the object can start a new stream.

        A trailing odd byte is dropped: half a sample is not audio.
        """
        self._aligner.reset()
        if self._stream is None:
            return b""
        tail: np.ndarray = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        # A fresh stream rather than clear(): libsoxr dithers int16 output and clear() does not restart
        # the dither, so a reused resampler would not reproduce a new one's output bit for bit.
        self._stream = self._new_stream()
        return tail.astype("<i2", copy=False).tobytes()
