"""The timing of a context's held characters, from the held audio's start (the resume point's ledger).

Characters come in with each chunk's alignment (a whole generation's at once without
``sync_alignment``) and leave from the front as their audio is released. Releasing a prefix moves a
head index and an origin instead of rewriting every later entry, and the scan for characters whose
audio is all here resumes where the last one stopped: each character costs O(1) amortised however
long the generation, where shifting the rest on every chunk cost O(characters held) per chunk.
"""

from __future__ import annotations

from typing import Any

_COMPACT_AT = 256  # released entries kept before the lists are cut (once they are also half of them)


class Timeline:
    """Characters with start and duration in ms; times read relative to the held audio's start."""

    def __init__(self) -> None:
        """Empty."""
        self._chars: list[str] = []
        self._starts: list[float] = []  # from the origin: the held audio's start when the lists began
        self._durs: list[float] = []
        self._head = 0  # first entry not released
        self._origin_ms = 0.0  # audio released since the origin: subtract for times from the held start
        self._heard = 0  # entries before this index have all their audio here (only moves forward)
        self._space = 0  # just after the last whitespace entry before ``_heard`` (``_head`` or less: none)

    def __len__(self) -> int:
        """Entries not released."""
        return len(self._chars) - self._head

    def extend(self, chars: list[str], starts: list[float], durs: list[float], offset_ms: float) -> None:
        """Append one alignment whose times start ``offset_ms`` after the held audio's start."""
        base = offset_ms + self._origin_ms
        self._chars += chars
        self._starts += [s + base for s in starts]
        self._durs += durs

    def end(self, i: int) -> float:
        """End of the ``i``-th unreleased entry (negative: from the back), from the held audio's start."""
        j = self._head + i if i >= 0 else len(self._chars) + i
        return (self._starts[j] - self._origin_ms) + self._durs[j]

    def last_end(self) -> float:
        """End of the last entry (0.0 when empty)."""
        return self.end(-1) if len(self) else 0.0

    def hear(self, upto_ms: float) -> tuple[int, int]:
        """(entries from the front whose audio ends by ``upto_ms``, entries up to and including the last
        whitespace one among them; 0: none). The first stops at the first entry that ends later."""
        chars, starts, durs, origin = self._chars, self._starts, self._durs, self._origin_ms
        i, space, n = self._heard, self._space, len(chars)
        while i < n and (starts[i] - origin) + durs[i] <= upto_ms:
            if chars[i].isspace():
                space = i + 1
            i += 1
        self._heard, self._space = i, space
        return i - self._head, max(0, space - self._head)

    def started(self, upto_ms: float) -> int:
        """Entries from the front whose audio starts before ``upto_ms`` (here at least in part)."""
        chars, starts, origin = self._chars, self._starts, self._origin_ms
        i = max(self._heard, self._head)
        while i < len(chars) and starts[i] - origin < upto_ms:
            i += 1
        return i - self._head

    def chars(self, count: int | None = None) -> list[str]:
        """The first ``count`` unreleased characters (all when None)."""
        stop = len(self._chars) if count is None else self._head + count
        return self._chars[self._head:stop]

    def first_non_space(self) -> int:
        """Index of the first unreleased non-whitespace character (0 when there is none)."""
        for i in range(self._head, len(self._chars)):
            if not self._chars[i].isspace():
                return i - self._head
        return 0

    def alignment(self, count: int | None = None) -> dict[str, Any]:
        """ElevenLabs' alignment shape for the first ``count`` entries (all when None), times from the held
        audio's start."""
        stop = len(self._chars) if count is None else self._head + count
        origin = self._origin_ms
        return {"chars": self._chars[self._head:stop],
                "charStartTimesMs": [whole_ms(s - origin) for s in self._starts[self._head:stop]],
                "charDurationsMs": self._durs[self._head:stop]}

    def release(self, count: int, audio_ms: float) -> None:
        """The first ``count`` entries and ``audio_ms`` of held audio went out."""
        self._head += count
        if self._head >= len(self._chars):
            self.clear()
            return
        self._origin_ms += audio_ms
        self._space = self._head  # a release never ends before the last heard whitespace
        self._heard = max(self._heard, self._head)  # a character released while partly here
        if self._head >= _COMPACT_AT and 2 * self._head >= len(self._chars):
            head = self._head
            del self._chars[:head], self._starts[:head], self._durs[:head]
            self._head, self._heard, self._space = 0, self._heard - head, 0

    def clear(self) -> None:
        """Forget every entry."""
        self._chars, self._starts, self._durs = [], [], []
        self._head = self._heard = self._space = 0
        self._origin_ms = 0.0


def whole_ms(v: float) -> float:
    """Keep whole milliseconds whole (the upstream sends integers)."""
    return int(v) if float(v).is_integer() else round(v, 3)
