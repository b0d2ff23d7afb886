"""Injected failures: which socket gets which fault after how many audio chunks, within a budget."""

from __future__ import annotations

from collections.abc import Callable

from emulator.config import CHUNK_FAULTS, EmulatorConfig
from emulator.stats import Stats


class FaultBudget:
    """Process-wide count of sockets still allowed to fault (``fault_sockets``; None = unlimited)."""

    def __init__(self, remaining: int | None) -> None:
        """Start with ``remaining`` sockets."""
        self.remaining = remaining

    def rearm(self, remaining: int | None) -> None:
        """Reset the budget (done whenever a fault setting changes)."""
        self.remaining = remaining

    def claim(self) -> bool:
        """Take one socket from the budget; False when it is used up."""
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


class SocketFaults:
    """One socket's audio-chunk count and the faults that already fired on it."""

    def __init__(self, config: Callable[[], EmulatorConfig], budget: FaultBudget, stats: Stats) -> None:
        """Read thresholds from ``config()`` at every check, so runtime changes reach open sockets."""
        self._config = config
        self._budget = budget
        self._stats = stats
        self._fired: set[str] = set()
        self._charged = False  # this socket already took its place in the budget
        self.chunks_sent = 0

    def due(self) -> str | None:
        """The fault to fire now (e.g. ``"drop_after_chunks"``), or None; each fires once per socket."""
        config = self._config()
        if not config.chunk_faults_set:
            return None  # the usual case, checked twice per chunk: no loop over the fault fields
        for kind in CHUNK_FAULTS:
            threshold = getattr(config, kind)
            if threshold is None or kind in self._fired or self.chunks_sent < threshold:
                continue
            # "The next N sockets that reach the threshold": a socket is counted when its first fault fires.
            if not self._charged:
                if not self._budget.claim():
                    return None
                self._charged = True
            self._fired.add(kind)
            self._stats.faults_fired[kind.removesuffix("_after_chunks")] += 1
            return kind
        return None
