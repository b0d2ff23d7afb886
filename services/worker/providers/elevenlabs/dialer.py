"""When the pool may start its next handshake: a bounded rate, backoff with jitter, and respect for "busy".

A cold pool asked for hundreds of contexts at once would otherwise dial dozens of sockets in the
same millisecond; the provider's edge refuses such a storm (429 ``system_busy``) and every refused
socket used to cost the contexts waiting on it. So every handshake reserves its start time here:

- **Rate**: at most ``POOL_HANDSHAKE_BURST`` at once, then ``POOL_HANDSHAKE_RATE`` per second for
  the whole pool (a GCRA schedule: reservations are spaced, never refused).
- **Per-key backoff**: a key whose sockets keep failing (bad voice, network) waits
  ``50 ms · 2^(n-1)`` (at most 5 s) with jitter before its next dial; audio on any of its sockets
  clears it. Keys are remembered least-recently-failed-first up to ``FAILURE_MEMORY``.
- **Busy**: an upstream refusal of the "too many requests" kind (429, ``system_busy``,
  ``too_many_concurrent_requests``) pauses every new handshake of the pool for ``Retry-After`` when
  given, else for ``250 ms · 2^(n-1)`` (at most 5 s) with jitter; then the pool dials at half its
  rate without burst (halved again per refusal), recovering a twentieth of the rate per handshake that
  succeeds. Sockets booked before the refusal re-book instead of dialling into it.
"""

from __future__ import annotations

import random
from collections import OrderedDict

from .options import SocketKey

FAILURE_MEMORY = 256  # keys with recent connect failures: every key a client names must not stay
_KEY_BACKOFF_BASE_S = 0.05
_BUSY_BACKOFF_BASE_S = 0.25
_BACKOFF_MAX_S = 5.0
_MIN_SCALE = 1 / 64
_RECOVERY_STEP = 0.05  # twenty handshakes that succeed restore the configured rate


def _backoff(base: float, failures: int) -> float:
    return min(base * 2 ** (failures - 1), _BACKOFF_MAX_S) * random.uniform(0.5, 1.0)


class Dialer:
    """The pool's handshake schedule (see the module docstring); all times are monotonic seconds."""

    def __init__(self, rate: float, burst: int) -> None:
        """Allow ``burst`` handshakes at once and ``rate`` per second after that."""
        self._interval = 1.0 / rate
        self._burst = max(1, burst)
        self._scale = 1.0  # share of the configured rate in force: halved by each busy refusal
        self._next = 0.0  # GCRA's theoretical arrival time of the next handshake
        self.failures: OrderedDict[SocketKey, int] = OrderedDict()
        self._busy = 0
        self._busy_until = 0.0
        self._refused_at = float("-inf")
        self.refused = 0  # handshakes refused as busy, for status

    def reserve(self, key: SocketKey | None, now: float) -> float:
        """Book the next handshake (for ``key``): the seconds to wait before dialling."""
        interval = self._interval / self._scale
        # No burst credit while slowed down: a refusal means the provider's bucket is empty.
        tolerance = (self._burst - 1) * interval if self._scale >= 1.0 else 0.0
        start = max(now, self._next - tolerance, self._busy_until)
        fails = self.failures.get(key, 0) if key is not None else 0
        if fails:
            start = max(start, now + _backoff(_KEY_BACKOFF_BASE_S, fails))
        self._next = max(self._next, start) + interval
        return start - now

    def credit(self, now: float) -> int:
        """Handshakes that could start right now without waiting (what growth ahead of demand may spend:
        it never books a handshake that would queue ahead of one a waiting context needs)."""
        if now < self._busy_until:
            return 0
        interval = self._interval / self._scale
        tolerance = (self._burst - 1) * interval if self._scale >= 1.0 else 0.0
        room = now + tolerance - max(self._next, now)
        return 0 if room < 0 else min(self._burst, int(room / interval + 1e-9) + 1)

    def recheck(self, booked: float, now: float) -> float:
        """A socket booked at ``booked`` is about to dial: 0 to go; after a refusal since, a new booking."""
        return 0.0 if booked >= self._refused_at else self.reserve(None, now)

    def failed(self, key: SocketKey) -> None:
        """A socket of ``key`` failed: its next dial backs off further."""
        self.failures[key] = self.failures.pop(key, 0) + 1
        while len(self.failures) > FAILURE_MEMORY:
            self.failures.popitem(last=False)

    def busy(self, now: float, retry_after_s: float | None, booked: float) -> None:
        """The upstream refused a handshake booked at ``booked`` for load: pause, then dial at half the rate.

        Refusals of handshakes booked before the last one are the same storm: they extend the pause
        but do not slow the rate again."""
        self.refused += 1
        if booked >= self._refused_at:
            self._busy += 1
            self._scale = max(self._scale / 2, _MIN_SCALE)
            self._refused_at = now
        pause = retry_after_s if retry_after_s is not None else _backoff(_BUSY_BACKOFF_BASE_S, self._busy)
        self._busy_until = max(self._busy_until, now + pause)
        self._next = max(self._next, self._busy_until)

    def opened(self) -> None:
        """A handshake succeeded: the upstream takes sockets again; the rate recovers step by step."""
        self._busy = 0
        self._scale = min(1.0, self._scale + _RECOVERY_STEP)

    def healthy(self, key: SocketKey) -> None:
        """Audio flowed on a socket of ``key``: no more backoff for it."""
        self.failures.pop(key, None)
