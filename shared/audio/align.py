"""Carry a partial sample from one chunk to the next, so chunk boundaries never split a sample."""

from __future__ import annotations


class SampleAligner:
    """Return the whole-sample prefix of each chunk and keep the rest for the next one."""

    def __init__(self, width: int) -> None:
        """Align to ``width`` bytes per sample (2 for PCM16)."""
        if width < 1:
            raise ValueError(f"sample width must be >= 1, got {width}")
        self._width = width
        self._carry = b""

    @property
    def pending(self) -> int:
        """Bytes held back: a sample not yet complete."""
        return len(self._carry)

    def take(self, data: bytes) -> bytes:
        """Return the carry plus ``data``, cut to a whole number of samples; keep the remainder."""
        if self._carry:
            data = self._carry + data
        cut = len(data) - len(data) % self._width
        if cut == len(data):
            self._carry = b""
            return bytes(data)
        self._carry = bytes(data[cut:])
        return bytes(data[:cut])

    def reset(self) -> bytes:
        """Drop and return the partial sample: at the end of a stream it is not audio."""
        dropped, self._carry = self._carry, b""
        return dropped
