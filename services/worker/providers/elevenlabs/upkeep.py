"""Keeping the pool's sockets alive and fresh (a mixin of the pool, run every tick).

Initialised contexts get per-context keep-alives. An idle socket (no contexts) is never pinged,
because every message without a ``context_id`` targets a server-side default context that may take
a slot; instead, shortly before its inactivity deadline it is refreshed make-before-break (a
replacement is dialled, then the idle one is closed by us), so the prewarmed minimum never lapses
and the server never closes a socket for inactivity. Sockets past ``pool_max_socket_age_s`` drain
(no new contexts, existing ones finish) and are replaced the same way.

Growth ahead of demand (``POOL_PREGROW``, on by default): every key with recent demand
(:mod:`.demand`) keeps ``ceil((max(live + trend · lookahead, recent peak) + spare) / contexts per
socket)`` sockets, the spare being ``POOL_SPARE_FRACTION`` of the peak and at least
``POOL_SPARE_SLOTS`` free slots (the default, 1, opens a key's next socket as its last free slot
is taken, as without growth ahead; 20 % of a peak of 50 keeps two spare sockets). Such a socket is refreshed, not retired, when it idles toward
the inactivity deadline, until the key's peak is older than ``POOL_DEMAND_WINDOW_S``; then the
surplus closes at its idle deadline (no handshake is spent to close it early). The growth is
bounded: by ``POOL_MAX_SOCKETS`` (shared between keys in proportion to their peaks), by the
permits left (``UPSTREAM_CONCURRENCY``: a free slot no context could take is waste), and by the
handshake schedule (it dials only what the :class:`~.dialer.Dialer` would start at once, never
ahead of a handshake a waiting context needs, and not for a key in backoff). Contexts then fill the
fullest open socket first (:meth:`~.sockets.SocketSet.best_slot` with ``pack``), so spares stay
idle until a step needs them and a surplus one can close. Off, the pool opens
a socket when one fills (one spare for the key) and keeps idle ones only for ``POOL_MIN_SOCKETS``.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import aiohttp

from shared.logging import get_logger
from shared.metrics import POOL_HANDSHAKE_WAITS, POOL_RECONNECTS, POOL_SPARE_SLOTS, POOL_TARGET_SOCKETS
from shared.settings import Settings

from .connection import SocketState, UpstreamSocket
from .context import UpstreamContext
from .demand import Demand
from .dialer import Dialer
from .options import SocketKey
from .placement import PlacementLine
from .sockets import Sockets

log = get_logger(__name__)

# Growth is planned at most this often from the pump (which runs at every placement and final); a
# change in between is planned at the end of the interval. Planning reads every socket and every
# unplaced context: at each pump it cost 0.3 ms CPU per context at 50 concurrent (cProfile).
_GROWTH_EVERY_S = 0.02


class Upkeep:
    """The pool's maintenance tick (``SocketPool`` provides the state and the actions)."""

    settings: Settings
    provider: str
    default_key: SocketKey | None
    keepalive_s: float
    refresh_after_s: float
    _tick_s: float
    _sockets: Sockets
    _closed: bool
    _session: aiohttp.ClientSession | None
    _placement: PlacementLine
    _unplaced: set[UpstreamContext]
    dialer: Dialer
    _demand: Demand
    _targets: dict[SocketKey, int]  # sockets each key keeps ahead of demand (growth on), as last planned
    _grown_at: float  # when growth was last planned from the pump
    _grow_later: asyncio.TimerHandle | None  # a deferred plan, at the end of the interval

    def _open(self, key: SocketKey) -> UpstreamSocket:
        raise NotImplementedError

    def _retire(self, sock: UpstreamSocket, why: str) -> None:
        raise NotImplementedError

    def _pump(self) -> None:
        raise NotImplementedError

    def rest_idle(self, sock: UpstreamSocket, now: float) -> None:
        """Let quiet contexts on ``sock`` give their permits back (the pool implements it)."""
        raise NotImplementedError

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self._tick(time.monotonic())
            except Exception:
                log.exception("upstream_pool_tick_failed")

    def _tick(self, now: float) -> None:
        self._plan(now)
        max_age = self.settings.pool_max_socket_age_s
        for sock in self._sockets.all():
            if sock.state is SocketState.OPEN:
                sock.send_keepalives(now, self.keepalive_s)
                self.rest_idle(sock, now)
                if not sock.draining and sock.opened_at is not None and now - sock.opened_at >= max_age:
                    sock.draining = True
                    POOL_RECONNECTS.labels(self.provider, "max_age").inc()
                    log.info("upstream_socket_aged", socket=sock.sid, live_contexts=sock.load)
                idle = sock.load == 0 and not sock.draining and not sock.replacing
                if idle and now - sock.last_sent >= self.refresh_after_s:
                    if self._needed(sock):
                        self._refresh(sock, now)
                    else:
                        self._retire(sock, "idle")
                        continue
            if sock.load == 0 and (sock.draining or (sock.replacing and self._replaced(sock))):
                self._retire(sock, "drained")
            elif sock.draining and not any(c.live for c in sock.contexts.values()) \
                    and now - sock.last_received >= self.settings.upstream_first_audio_timeout_s:
                # Only abandoned contexts whose finals never came: closing the socket is the only way
                # to get their slots back.
                self._retire(sock, "stuck")
        self._ensure_min()
        self._pump()

    def _refresh(self, sock: UpstreamSocket, now: float) -> None:
        """Replace idle ``sock`` make-before-break (it closes once its replacement is open)."""
        if self.settings.pool_pregrow:
            # One replacement dialled per refresh, now, or the refresh waits for the next tick (there is
            # margin before the deadline): many sockets idle since the same burst must not all be marked
            # at once when the pool is at its cap or its handshake rate, or none could be replaced.
            if len(self._sockets) >= self.settings.pool_max_sockets or self.dialer.credit(now) < 1:
                return
            sock.replacing = True
            self._open(sock.key)
        else:
            sock.replacing = True  # _ensure_min dials the replacement
        POOL_RECONNECTS.labels(self.provider, "idle_refresh").inc()

    def _wanted(self, key: SocketKey) -> int:
        """Sockets ``key`` keeps even when idle: the prewarmed minimum, or its growth target if larger."""
        floor = self.settings.pool_min_sockets if key == self.default_key else 0
        return max(floor, self._targets.get(key, 0))

    def _needed(self, sock: UpstreamSocket) -> bool:
        """Would closing ``sock`` drop its key below what it keeps (the minimum, or its growth target)?"""
        return self._sockets.of(sock.key).lasting(besides=sock) < self._wanted(sock.key)

    def _replaced(self, sock: UpstreamSocket) -> bool:
        """Are enough other sockets of its key open that closing ``sock`` keeps what the key keeps?"""
        found = self._sockets.of(sock.key)
        floor = self.settings.pool_min_sockets if sock.key == self.default_key else 0
        # Never below the growth target while its sockets are still connecting; a target the pool could
        # not dial (cap, rate) holds a refreshed socket only until every sibling it has is open.
        ahead = min(self._targets.get(sock.key, 0), len(found) - 1)
        return found.open_besides(sock) >= max(1, floor, ahead)

    def _ensure_min(self) -> None:
        key = self.default_key
        if key is None or self._closed or self._session is None:
            return
        have = self._sockets.of(key).lasting()
        while have < self.settings.pool_min_sockets and len(self._sockets) < self.settings.pool_max_sockets:
            self._open(key)
            have += 1

    # -- growth ahead of demand ---------------------------------------------------------------------------
    def _placed(self, sock: UpstreamSocket) -> None:
        """A context was just placed on ``sock``: count a handshake wait; without growth ahead, keep one spare."""
        if sock.state is SocketState.CONNECTING:
            POOL_HANDSHAKE_WAITS.labels(self.provider).inc()
        if self.settings.pool_pregrow:
            return  # the pump plans and grows once it has served the line
        if self._sockets.of(sock.key).free_slots(self.settings.pool_contexts_per_socket) == 0 \
                and len(self._sockets) < self.settings.pool_max_sockets and not self._placement.exhausted:
            self._open(sock.key)  # headroom: the next context of this key should not wait for a handshake

    def _live_by_key(self) -> dict[SocketKey, int]:
        """Contexts on a socket or opened and waiting for one, by key."""
        live: dict[SocketKey, int] = {}
        for key, load in self._sockets.loads():
            live[key] = load
        for ctx in self._unplaced:
            if ctx.socket is None:  # a placed one leaves the set only once its caller resumes
                live[ctx.spec.key] = live.get(ctx.spec.key, 0) + 1
        return live

    def _plan(self, now: float) -> None:
        """Observe demand and set each remembered key's socket target (nothing when growth is off)."""
        s = self.settings
        if not s.pool_pregrow or self._closed:
            return
        self._demand.observe(now, self._live_by_key())
        cap = s.pool_contexts_per_socket
        permits_left = max(0, s.upstream_concurrency - self._placement.live)
        targets: dict[SocketKey, int] = {}
        for key, d in self._demand:
            peak = d.peak()
            if not peak:
                continue
            spare = max(s.pool_spare_slots, math.ceil(s.pool_spare_fraction * peak))
            want = max(self._demand.forecast(key, now, s.pool_growth_lookahead_s), peak) + spare
            want = min(want, d.live + permits_left)
            targets[key] = min(math.ceil(want / cap - 1e-9), s.pool_max_sockets)
        self._targets = targets

    def _grow_ahead(self) -> None:
        """Open what the plan wants and the bounds allow (see the module docstring)."""
        s = self.settings
        if not s.pool_pregrow or self._closed or self._session is None:
            return
        now = time.monotonic()
        if now - self._grown_at < _GROWTH_EVERY_S:
            if self._grow_later is None:
                self._grow_later = asyncio.get_running_loop().call_later(
                    self._grown_at + _GROWTH_EVERY_S - now, self._grow_deferred)
            return
        self._grown_at = now
        self._plan(now)
        cap = s.pool_contexts_per_socket
        room = max(0, s.upstream_concurrency - self._placement.live) - self._sockets.lasting_slots(cap)
        budget = min(self.dialer.credit(now), s.pool_max_sockets - len(self._sockets), math.ceil(room / cap))
        if budget <= 0:
            return
        short = {k: t - self._sockets.of(k).lasting() for k, t in self._targets.items()
                 if k not in self.dialer.failures}
        for key, n in _share(budget, {k: n for k, n in short.items() if n > 0},
                             {k: self._demand.peak(k) for k in short}).items():
            for _ in range(n):
                self._open(key)

    def _grow_deferred(self) -> None:
        self._grow_later = None
        if not self._closed:
            self._pump()

    def _growth_gauges(self) -> None:
        cap = self.settings.pool_contexts_per_socket
        POOL_SPARE_SLOTS.labels(self.provider).set(self._sockets.spare_slots(cap))
        POOL_TARGET_SOCKETS.labels(self.provider).set(sum(self._targets.values()))

    def growth_status(self) -> dict[str, Any]:
        """Growth ahead of demand for /admin/status: settings, spare slots, and the busiest keys' plans."""
        s = self.settings
        now = time.monotonic()
        keys = sorted(self._demand, key=lambda kd: -kd[1].peak())[:8]
        return {
            "enabled": s.pool_pregrow, "spare_slots_min": s.pool_spare_slots,
            "spare_fraction": s.pool_spare_fraction, "window_s": s.pool_demand_window_s,
            "lookahead_s": s.pool_growth_lookahead_s,
            "spare_slots": self._sockets.spare_slots(s.pool_contexts_per_socket),
            "target_sockets": sum(self._targets.values()), "keys_tracked": len(self._demand),
            "keys": [{"voice_id": k.voice_id, "format": k.output_format, "live": d.live, "peak": d.peak(),
                      "rising_per_s": round(d.rising(now, self._demand.trend_s), 2),
                      "target_sockets": self._targets.get(k, 0), "sockets": len(self._sockets.of(k))}
                     for k, d in keys],
        }


def _share(budget: int, short: dict[SocketKey, int], weight: dict[SocketKey, int]) -> dict[SocketKey, int]:
    """Split ``budget`` new sockets between keys short of their target, in proportion to ``weight``
    (highest averages, D'Hondt), none beyond its shortfall."""
    given = dict.fromkeys(short, 0)
    for _ in range(min(budget, sum(short.values()))):
        key = max((k for k in short if given[k] < short[k]), key=lambda k: max(weight.get(k, 0), 1) / (given[k] + 1))
        given[key] += 1
    return {k: n for k, n in given.items() if n}
