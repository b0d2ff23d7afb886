"""What the socket pool shows: its gauges, its saturation and its /admin/status (a mixin of the pool).

Counters are set as they change; the scans over every socket are rate-limited (see
:meth:`PoolViews._gauges`). Growth's own gauges and status are :mod:`.upkeep`'s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shared.metrics import POOL_CONTEXTS, POOL_SOCKETS, UPSTREAM_SATURATED
from shared.settings import Settings
from worker.upstream_permits import AccountLimit

from .context import UpstreamContext
from .dialer import Dialer
from .placement import PlacementLine
from .sockets import Sockets

# The socket gauges' scans run at most this often (see PoolViews._gauges).
_GAUGE_SCAN_S = 0.25


class PoolViews:
    """The pool's metrics and status (``SocketPool`` provides the state)."""

    settings: Settings
    provider: str
    dialer: Dialer
    _account: AccountLimit | None
    _placement: PlacementLine
    _sockets: Sockets
    _unplaced: set[UpstreamContext]
    _closed: bool
    _gauges_at: float  # when the socket gauges were last computed
    _gauge_timer: asyncio.TimerHandle | None  # a trailing scan, due at the end of the interval

    def _growth_gauges(self) -> None:
        raise NotImplementedError

    def growth_status(self) -> dict[str, Any]:
        """Growth ahead of demand for /admin/status (:mod:`.upkeep` implements it)."""
        raise NotImplementedError

    @property
    def saturated(self) -> bool:
        """Every permit is taken (here or account-wide) or contexts wait for one: new ones may be refused."""
        account = self._account is not None and self._account.saturated
        return account or self._placement.exhausted or len(self._placement) > 0

    def _gauges(self) -> None:
        """The pool's metrics: counters kept as they change, the socket scans at most every
        ``_GAUGE_SCAN_S`` (trailing call included, so the last state always shows).

        This runs at every placement, final and socket change; the two scans (sockets by state,
        spare slots) walk every socket, which at 1,000 streams (~200 sockets) was 12.5% of the
        worker's CPU (py-spy, ``bench.run --levels 1000 --profile``)."""
        POOL_CONTEXTS.labels(self.provider).set(self._placement.live)
        self._saturation_gauge()
        if self._gauge_timer is not None:
            return
        now = time.monotonic()
        due = self._gauges_at + _GAUGE_SCAN_S
        if now >= due or self._closed:
            self._scan_gauges()
        else:
            self._gauge_timer = asyncio.get_running_loop().call_at(
                asyncio.get_running_loop().time() + (due - now), self._scan_gauges)

    def _scan_gauges(self) -> None:
        self._gauge_timer = None
        self._gauges_at = time.monotonic()
        for state, n in self._sockets.state_counts().items():
            POOL_SOCKETS.labels(self.provider, state).set(n)
        self._growth_gauges()

    def _saturation_gauge(self) -> None:
        UPSTREAM_SATURATED.labels(self.provider).set(1 if self.saturated else 0)

    def status(self) -> dict[str, Any]:
        """Pool state for /admin/status and the worker's /readyz: sockets, contexts, limits, saturation."""
        s = self.settings
        return {
            "sockets": self._sockets.state_counts(),
            "live_contexts": self._placement.live,
            "waiting": len(self._placement),
            "saturated": self.saturated,
            "unplaced_contexts": len(self._unplaced),
            "dormant_contexts": sum(1 for k in self._sockets.all() for c in k.contexts.values() if c.dormant),
            "keys": self._sockets.keys,
            "handshakes_refused": self.dialer.refused,
            "limits": {"min_sockets": s.pool_min_sockets, "max_sockets": s.pool_max_sockets,
                       "contexts_per_socket": s.pool_contexts_per_socket, "concurrency": s.upstream_concurrency,
                       "handshake_rate": s.pool_handshake_rate, "handshake_burst": s.pool_handshake_burst},
            "account": self._account.status() if self._account is not None else {"scope": "worker"},
            "growth": self.growth_status(),
            "socket_list": self._sockets.describe(),
        }
