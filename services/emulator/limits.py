"""Account-level refusals: a handshake rate (token bucket) and a cap on concurrent generations.

What the reference says (elevenlabs-protocol.md §6): HTTP errors include 429 ``too_many_concurrent_requests``
and ``system_busy`` with a ``{"detail": {"status", "message"}}`` body; a WebSocket error is an error
frame then a close. How the real service refuses a *handshake* storm is unconfirmed: an edge in front
of it answers the upgrade with 429, so that is the default here (``handshake_refusal="http_429"``);
``close_1008`` upgrades and then refuses like any WebSocket error. Concurrency counts what the plan
counts: time spent generating (a WebSocket context producing audio, an HTTP TTS request), not idle
sockets. The texts below are the emulator's; only the status strings come from the reference.
"""

from __future__ import annotations

import math

from emulator.config import EmulatorConfig

SYSTEM_BUSY = "system_busy"
TOO_MANY_CONCURRENT = "too_many_concurrent_requests"
SYSTEM_BUSY_MESSAGE = "Too many connection attempts; the request could not be processed. Retry later."


def too_many_concurrent_message(limit: int) -> str:
    """The refusal text naming the account's limit."""
    return f"Too many concurrent requests: the limit for this account is {limit}."


class HandshakeBucket:
    """Token bucket over handshake arrivals: ``handshake_burst`` at once, then ``handshake_rate`` per second."""

    def __init__(self) -> None:
        """Start empty of history: the first call finds a full bucket."""
        self._tokens: float | None = None
        self._last = 0.0

    def refill(self) -> None:
        """Back to a full burst (done whenever the rate settings change)."""
        self._tokens = None

    def admit(self, now: float, config: EmulatorConfig) -> float | None:
        """None when this handshake may proceed; else the seconds until one would be admitted."""
        rate = config.handshake_rate
        if rate is None:
            return None
        burst = float(config.handshake_burst)
        tokens = burst if self._tokens is None else min(burst, self._tokens + (now - self._last) * rate)
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return None
        self._tokens = tokens
        return (1.0 - tokens) / rate


def retry_after(wait_s: float) -> str:
    """A ``Retry-After`` value (whole seconds, at least 1) for a refusal that clears in ``wait_s``."""
    return str(max(1, math.ceil(wait_s)))


class Concurrency:
    """Generations in progress across the emulator (the account's concurrent requests)."""

    def __init__(self) -> None:
        """None running."""
        self.active = 0

    def try_acquire(self, limit: int | None) -> bool:
        """Take a slot unless ``limit`` are taken (None = no limit)."""
        if limit is not None and self.active >= limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        """Give a slot back."""
        self.active -= 1
