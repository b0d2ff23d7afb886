"""How many contexts each socket key is about to want: its live count, a short trend and a recent peak.

The pool grows ahead of demand from these three numbers (:mod:`.upkeep`), so a context rarely
waits for a handshake (~300 ms to the provider, the largest part of a cold time-to-first-audio):

- **live**: contexts holding a slot on a socket of the key, plus those opened and not yet placed;
- **trend**: contexts gained per second, a decayed sum over ``trend_s`` (each context that arrives
  adds ``1/trend_s``, which then fades with that time constant; one that ends subtracts the same),
  so ``trend · trend_s`` is about the net change over the last ``trend_s``;
- **peak**: the most live contexts seen in the last ``window_s`` (the maximum over ``_BUCKETS``
  buckets, so it falls in steps once a busy period is older than the window): a step back up to a
  level seen minutes ago finds its sockets warm, and a quiet key lets them go after the window.

At most ``max_keys`` keys are remembered (every key a client names must not stay): the one with the
fewest live contexts, longest quiet, is forgotten first.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .options import SocketKey

MAX_KEYS = 64
_BUCKETS = 6


@dataclass
class KeyDemand:
    """One key's demand (see the module docstring); times are monotonic seconds."""

    live: int
    at: float  # last observation
    active_at: float  # last time it had a live context
    trend: float = 0.0
    peaks: deque[tuple[float, int]] = field(default_factory=deque)  # (bucket start, most live in it)

    def observe(self, now: float, live: int, trend_s: float, bucket_s: float, window_s: float) -> None:
        """Record ``live`` contexts at ``now``."""
        dt = max(0.0, now - self.at)
        self.trend = self.trend * math.exp(-dt / trend_s) + (live - self.live) / trend_s
        self.live, self.at = live, now
        if live:
            self.active_at = now
        if self.peaks and now - self.peaks[-1][0] < bucket_s:
            start, most = self.peaks[-1]
            if live > most:
                self.peaks[-1] = (start, live)
        else:
            self.peaks.append((now, live))
        while self.peaks and now - self.peaks[0][0] >= window_s:
            self.peaks.popleft()

    def peak(self) -> int:
        """The most live contexts within the window (now included)."""
        return max([self.live, *(most for _, most in self.peaks)])

    def rising(self, now: float, trend_s: float) -> float:
        """Contexts per second gained lately (0 when falling), decayed to ``now``."""
        return max(0.0, self.trend * math.exp(-max(0.0, now - self.at) / trend_s))


class Demand:
    """Per-key demand for the pool's growth ahead of need."""

    def __init__(self, *, window_s: float, trend_s: float, max_keys: int = MAX_KEYS) -> None:
        """Remember peaks for ``window_s``, trends over ``trend_s``, at most ``max_keys`` keys."""
        self.window_s = max(window_s, 1e-3)
        self.trend_s = max(trend_s, 1e-3)
        self._bucket_s = self.window_s / _BUCKETS
        self.max_keys = max_keys
        self._keys: dict[SocketKey, KeyDemand] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[tuple[SocketKey, KeyDemand]]:
        return iter(list(self._keys.items()))

    def observe(self, now: float, live: Mapping[SocketKey, int]) -> None:
        """Record the live contexts of every key at ``now`` (a remembered key not in ``live`` has none)."""
        for key, d in self._keys.items():
            if key not in live:
                d.observe(now, 0, self.trend_s, self._bucket_s, self.window_s)
        for key, n in live.items():
            found = self._keys.get(key)
            if found is None:
                found = self._keys[key] = KeyDemand(live=0, at=now, active_at=now)
            found.observe(now, n, self.trend_s, self._bucket_s, self.window_s)
        for key in [k for k, d in self._keys.items() if d.peak() == 0]:
            del self._keys[key]  # quiet for a whole window: nothing to remember
        while len(self._keys) > self.max_keys:
            victim = min(self._keys, key=lambda k: (self._keys[k].live, self._keys[k].active_at))
            del self._keys[victim]

    def get(self, key: SocketKey) -> KeyDemand | None:
        """``key``'s demand, if remembered."""
        return self._keys.get(key)

    def forecast(self, key: SocketKey, now: float, lookahead_s: float) -> float:
        """Contexts ``key`` is expected to want within ``lookahead_s``: the live count plus the rising trend
        (at most doubling it: a step is not a rate that lasts)."""
        d = self._keys.get(key)
        if d is None:
            return 0.0
        return d.live + min(d.rising(now, self.trend_s) * lookahead_s, float(max(d.live, 1)))

    def peak(self, key: SocketKey) -> int:
        """The most live contexts ``key`` had within the window (0 if forgotten)."""
        d = self._keys.get(key)
        return d.peak() if d is not None else 0
