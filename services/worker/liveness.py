"""Keep the heartbeat key alive from a thread while the event loop is busy, not while it is hung.

Gateways tell a dead worker by its heartbeat key lapsing (``HEARTBEAT_TTL_S``, 1.5 s) and then move
its contexts. The key used to be refreshed only by a task on the worker's event loop, so a loop that
was merely busy for longer than the TTL (a burst of 1,000 jobs claimed at once) passed for dead:
every one of its contexts was declared ``worker_lost`` and re-enqueued onto the same busy worker,
and the extra work kept it busy (a 1,000-stream run collapsed to 3% completed, worker_lost x315).

This thread extends the key's TTL (``PEXPIRE``: it never creates the key, so a drained or stopped
worker's key still goes) every ``HEARTBEAT_INTERVAL_S`` as long as the loop's own heartbeat ran
within ``HEARTBEAT_STALL_LIMIT_S``. A killed process stops both at once (detection stays at the TTL);
a loop hung for longer than the limit stops the thread's refreshes too, and the key lapses.
"""

from __future__ import annotations

import threading
import time

import redis
from redis.exceptions import RedisError

from shared.logging import get_logger

log = get_logger(__name__)


class LivenessKeeper:
    """A daemon thread that extends ``key``'s TTL while :meth:`loop_alive` is called often enough."""

    def __init__(self, url: str, key: str, *, ttl_s: float, interval_s: float, stall_limit_s: float) -> None:
        self._key = key
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._interval_s = interval_s
        self._stall_limit_s = stall_limit_s
        self._client = redis.Redis.from_url(url, socket_timeout=interval_s, socket_connect_timeout=interval_s)
        self._loop_beat = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat-liveness", daemon=True)
        self._failing = False

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def loop_alive(self) -> None:
        """The event loop's heartbeat ran just now (called from the loop)."""
        self._loop_beat = time.monotonic()

    def halt(self) -> None:
        """Stop refreshing now, without waiting for the thread (the loop's beat ended)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop refreshing (before the key is cleared at shutdown) and close the connection."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval_s * 3)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            if time.monotonic() - self._loop_beat > self._stall_limit_s:
                continue  # hung, not busy: let the key lapse so gateways move the contexts
            try:
                self._client.pexpire(self._key, self._ttl_ms)
            except (RedisError, OSError) as e:
                if not self._failing:  # once per outage; the loop's own beat logs its failures
                    log.warning("heartbeat_liveness_failed", error=type(e).__name__)
                self._failing = True
            else:
                self._failing = False
