"""How late a process's event loop runs its callbacks, and how long the cyclic garbage collector stops it.

Every hop of a context's audio waits for its process's event loop; when that loop is late, every
context on it is late by the same amount, which no per-context span can tell apart from a slow
upstream or Redis. A sleeper task measures the lateness directly (a timer due in ``interval`` fires
that much later), and :mod:`gc`'s callbacks time each collection, the usual cause of a late loop in
a process holding many small objects. Both are histograms labelled by service and, for the
collector, generation (0-2): a bounded set.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from prometheus_client import Histogram

_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
LOOP_LAG = Histogram("tts_event_loop_lag_seconds",
                     "How late the event loop ran a timer (sampled every 100 ms)", ["service"], buckets=_BUCKETS)
GC_PAUSE = Histogram("tts_gc_pause_seconds", "Cyclic garbage collections, by generation",
                     ["service", "generation"], buckets=_BUCKETS)

SAMPLE_INTERVAL_S = 0.1


async def watch_loop_lag(service: str, interval: float = SAMPLE_INTERVAL_S) -> None:
    """Forever: sleep ``interval`` and observe how much later than that the loop woke this task."""
    lag = LOOP_LAG.labels(service=service)
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        lag.observe(max(0.0, loop.time() - due))


class GcTimer:
    """Times every collection into :data:`GC_PAUSE` while installed (``gc.callbacks``)."""

    def __init__(self, service: str) -> None:
        """Label the pauses with ``service``."""
        self._pauses = [GC_PAUSE.labels(service=service, generation=str(g)) for g in range(3)]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """gc's callback: ``start`` then ``stop`` around each collection."""
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._pauses[min(2, int(info.get("generation", 2)))].observe(time.perf_counter() - self._started)
            self._started = 0.0

    def install(self) -> None:
        """Start timing (idempotent)."""
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        """Stop timing."""
        if self in gc.callbacks:
            gc.callbacks.remove(self)
