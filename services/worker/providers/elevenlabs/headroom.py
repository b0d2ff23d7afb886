"""How much audio a context's listener has buffered ahead of its playback, as far as the worker can tell.

The resume point holds a partial word back so that a failover can resume at a word boundary. That
hold is free while the upstream generates faster than real time (the listener's buffer grows with
every chunk), but an upstream that delivers at real-time pace leaves the listener only the chunk it
just got: holding part of it starves the player until the next chunk (measured: 73 of 79 contexts
underran at 20 streams on the emulator's real-time pacing, one chunk late in nearly every context).
So a hold is taken only when what the listener keeps after it still covers the wait for the next
upstream chunk, with a margin for the hops to the listener.

The listener's clock is modelled like a player: it starts at the first audio released, plays in real
time, and when it runs dry it restarts from the next audio (the transit to the listener is a
constant delay and cancels out).
"""

from __future__ import annotations

MARGIN_MS = 100.0  # buffer kept beyond the expected wait: pub/sub, gateway and client hops, scheduling
_GAP_DECAY = 0.75  # per chunk: the expected wait follows a slow upstream at once, a faster one gradually
MAX_GAP_MS = 5000.0  # one stall (a failover, a reconnect) must not forbid holds for the rest of a context


class Headroom:
    """A listener's playback clock against the audio released to it, and the upstream's chunk pace."""

    def __init__(self) -> None:
        """No audio released yet."""
        self._play_start: float | None = None  # when the listener's playback (re)started, in seconds
        self._released_ms = 0.0  # audio released since ``_play_start``'s reference point
        self._last_arrival: float | None = None
        self._gap_ms = 0.0  # expected wait for the next upstream chunk (a decaying peak of the gaps seen)

    def arrived(self, now: float) -> None:
        """An upstream chunk arrived at ``now`` (seconds, monotonic)."""
        if self._last_arrival is not None:
            gap = min(MAX_GAP_MS, (now - self._last_arrival) * 1000)
            self._gap_ms = max(gap, self._gap_ms * _GAP_DECAY)
        self._last_arrival = now

    def buffered_ms(self, now: float) -> float:
        """Audio the listener has not played yet at ``now`` (0 before any audio or once it ran dry)."""
        if self._play_start is None:
            return 0.0
        return max(0.0, self._released_ms - (now - self._play_start) * 1000)

    def can_hold(self, releasing_ms: float, now: float) -> bool:
        """Whether releasing only ``releasing_ms`` now (the rest held for the next chunk) keeps the listener
        playing until that chunk is expected."""
        return self.buffered_ms(now) + releasing_ms >= self._gap_ms + MARGIN_MS

    def released(self, ms: float, now: float) -> None:
        """``ms`` of audio went to the listener at ``now``."""
        if ms <= 0:
            return
        if self._play_start is None or self.buffered_ms(now) == 0.0:
            # First audio, or the player ran dry: playback (re)starts with this audio.
            self._play_start, self._released_ms = now, 0.0
        self._released_ms += ms
