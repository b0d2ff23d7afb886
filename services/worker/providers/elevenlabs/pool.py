"""The upstream socket pool: placement under the per-socket cap, sizing and replacement.

Placement is asked for at a context's first non-blank text, not when its job starts, and a placed
context that idles gives its permits back (:mod:`.lazy`). Keep-alives, refreshes and age limits
are the maintenance tick's (:mod:`.upkeep`); when a new socket may dial is the :mod:`.dialer`'s.

Placement: a context goes to the least-loaded open socket of its :class:`SocketKey` with a free
slot (a slot frees only at the context's final), else to a new socket while the pool is under
``pool_max_sockets``. Every live context also holds one of ``upstream_concurrency`` permits (the
account's concurrent-generation limit); beyond it, requests wait in FIFO order for at most
``upstream_slot_wait_s`` and then get ``UpstreamBusy``. With Redis the permit is account-wide
(:class:`worker.upstream_permits.AccountLimit`, shared by every worker) and taken before the
context joins this process's line, so the line orders by arrival across workers; the per-process
count stays as the fallback when there is no Redis, or it is unreachable. Both permits return
together at the context's final, failure or socket end; a move to another socket keeps them.

When a socket ends, its contexts move, resume on another socket or end as :mod:`.rehome` says.
"""

from __future__ import annotations

import asyncio
import contextvars
import time

import aiohttp

from shared.errors import UpstreamBusy, UpstreamDisconnected, UpstreamError
from shared.logging import get_logger
from shared.metrics import (
    POOL_RECONNECTS,
    POOL_SLOT_WAIT,
    POOL_SOCKET_USES,
    UPSTREAM_ERRORS,
)
from shared.settings import Settings
from worker.providers.base import Provider
from worker.upstream_permits import AccountLimit

from .connection import UpstreamSocket
from .context import UpstreamContext
from .demand import Demand
from .dialer import Dialer
from .lazy import PermitTiming
from .messages import Failure
from .options import SocketKey, default_key
from .placement import PlacementLine, Request
from .pool_views import PoolViews
from .rehome import Rehoming
from .sockets import Sockets
from .upkeep import Upkeep

log = get_logger(__name__)
_BENIGN = frozenset({"inactivity", "closed"})  # an idle socket closed by the server is not an outage


class SocketPool(PermitTiming, Upkeep, Rehoming, PoolViews):
    """Every upstream socket of one provider instance, shared by all the worker's jobs."""

    def __init__(self, settings: Settings, *, ws_base: str, headers: dict[str, str],
                 provider: str = "elevenlabs", account: AccountLimit | None = None) -> None:
        """Configure from ``settings``; nothing connects before :meth:`start`; ``account``: shared permits."""
        self.settings = settings
        self.provider = provider
        self._ws_base = ws_base
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._sockets = Sockets()
        self._every: set[UpstreamSocket] = set()  # until each socket's task has finished
        self._closers: set[asyncio.Task[None]] = set()
        self._placement = PlacementLine(settings.upstream_concurrency)
        self._account = account
        if account is not None:
            account.on_change = self._saturation_gauge  # its view changes after our own events too
        self.dialer = Dialer(settings.pool_handshake_rate, settings.pool_handshake_burst)
        self._demand = Demand(window_s=settings.pool_demand_window_s, trend_s=settings.pool_growth_lookahead_s)
        self._targets: dict[SocketKey, int] = {}
        self._grown_at = float("-inf")
        self._grow_later: asyncio.TimerHandle | None = None
        self._unplaced: set[UpstreamContext] = set()  # opened, not (yet) on a socket
        self._placing: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._gauges_at = 0.0  # when the socket gauges were last computed (see PoolViews._gauges)
        self._gauge_timer: asyncio.TimerHandle | None = None
        self._maint: asyncio.Task[None] | None = None
        self._closed = False
        self.default_key: SocketKey | None = default_key(settings) if settings.default_voice else None
        timeout = settings.upstream_inactivity_timeout_s
        self.keepalive_s = min(settings.pool_keepalive_s, timeout / 2)
        self._tick_s = max(0.01, min(self.keepalive_s / 4, 1.0))
        # Refresh early enough for a replacement handshake (a few seconds) plus tick jitter.
        self.refresh_after_s = timeout - min(timeout / 2, max(3.0, 4 * self._tick_s))
        self._connect_timeout_s = min(10.0, max(settings.upstream_first_audio_timeout_s, 1.0))
        self._heartbeat_s = max(settings.pool_keepalive_s, 1.0)
        self.fallback: Provider | None = None  # FAILOVER_LOCAL_VOICE: speaks what no socket could take over

    # -- life cycle ---------------------------------------------------------------------------------------
    async def start(self, session: aiohttp.ClientSession) -> None:
        """Prewarm ``pool_min_sockets`` for the default key and start the maintenance loop."""
        self._session = session
        if self._account is not None:
            await self._account.start()
        self._maint = asyncio.create_task(self._maintain(), name="elevenlabs-pool")
        if self.default_key is None:
            if self.settings.pool_min_sockets:
                log.info("upstream_prewarm_skipped", why="DEFAULT_VOICE not set")
            return
        self._ensure_min()
        first = self._sockets.of(self.default_key)
        deadline = time.monotonic() + self._connect_timeout_s
        while first.dialling():
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):  # not wait_for: it can swallow a racing cancel on 3.11
                    await self._changed.wait()
            except TimeoutError:
                break
        opened = self._sockets.of(self.default_key).open_count()
        if opened < self.settings.pool_min_sockets:
            log.warning("upstream_prewarm_incomplete", open=opened, wanted=self.settings.pool_min_sockets)
        else:
            log.info("upstream_prewarmed", open=opened, **self.default_key.label())

    async def close(self) -> None:
        """Fail every waiting and running context, then close every socket."""
        if self._closed:
            return
        self._closed = True
        if self._maint is not None:
            self._maint.cancel()
            await asyncio.wait([self._maint])
        for task in list(self._placing):
            task.cancel()
        if self._placing:
            await asyncio.wait(list(self._placing))
        for ctx in list(self._unplaced):
            ctx.fail(UpstreamDisconnected("provider shut down", audio_sent=ctx.audio_sent))
        self._unplaced.clear()
        for w in self._placement.drain():
            if isinstance(w, Request):
                if not w.fut.done():
                    w.fut.set_exception(UpstreamError("provider shut down"))
                    w.fut.exception()  # retrieved here; acquire() re-raises it
            else:
                w.ctx.fail(UpstreamDisconnected("provider shut down", audio_sent=w.ctx.audio_sent))
                self._release(w.ctx)
        for sock in self._sockets.all():
            for ctx in list(sock.contexts.values()):
                ctx.fail(UpstreamDisconnected("provider shut down", audio_sent=ctx.audio_sent))
        self._sockets.clear()
        await asyncio.gather(*(s.close() for s in list(self._every)), return_exceptions=True)
        if self._closers:
            await asyncio.wait(list(self._closers))
        if self._account is not None:
            await self._account.close()
        if self._gauge_timer is not None:
            self._gauge_timer.cancel()
            self._gauge_timer = None
        self._gauges()

    # -- placement ----------------------------------------------------------------------------------------
    async def acquire(self, ctx: UpstreamContext, resume: bool = False) -> None:
        """Place ``ctx`` on a socket (FIFO behind earlier requests); raise UpstreamBusy after the bounded wait.

        ``resume``: ``ctx`` is dormant on its socket and needs only its permits back."""
        if self._closed or self._session is None:
            raise UpstreamError("the ElevenLabs provider is not running")
        t0 = time.monotonic()
        deadline = t0 + self.settings.upstream_slot_wait_s
        if self._account is not None:
            try:
                await self._account.acquire(ctx.id, deadline, ctx.tenant)
            except UpstreamBusy as e:
                POOL_SLOT_WAIT.labels(self.provider).observe(time.monotonic() - t0)
                UPSTREAM_ERRORS.labels(self.provider, "busy_at_once" if e.details.get("refused") else "busy").inc()
                log.info("upstream_busy", **e.details)
                self._gauges()
                raise
            if self._closed:
                self._account.release(ctx.id)
                raise UpstreamError("the ElevenLabs provider shut down")
        w = Request(ctx, asyncio.get_running_loop().create_future(), t0, resume=resume)
        self._placement.append(w)
        self._pump()
        try:
            if not w.fut.done():
                await asyncio.wait([w.fut], timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.CancelledError:
            self._abandon(w)
            raise
        waited = time.monotonic() - t0
        POOL_SLOT_WAIT.labels(self.provider).observe(waited)
        if w.fut.done() and not w.fut.cancelled():
            w.fut.result()
            return
        self._abandon(w)
        limit = "concurrency" if self._placement.exhausted else "sockets"
        UPSTREAM_ERRORS.labels(self.provider, "busy").inc()
        log.info("upstream_busy", limit=limit, waited_ms=round(waited * 1000, 1), waiting=len(self._placement))
        raise UpstreamBusy(f"all upstream {limit} slots stayed busy for {waited:.1f}s", limit=limit,
                           waited_s=round(waited, 3))

    def place_at_once(self, ctx: UpstreamContext) -> bool:
        """The common case of :meth:`acquire` without its task and its wait: nobody in line, a permit here
        and (on credit) account-wide, a slot on one of the key's sockets. Most first texts take this
        path; it keeps a loop turn and the permit's round trip off their first audio."""
        if self._closed or self._session is None or len(self._placement) or self._placement.exhausted:
            return False
        if self._account is not None and not self._account.credit_open():
            return False
        sock = self._sockets.of(ctx.spec.key).best_slot(self.settings.pool_contexts_per_socket,
                                                         self.settings.pool_pregrow)
        if sock is None:
            return False  # the line grows the pool (or evicts) for it
        if self._account is not None:
            self._account.take_on_credit(ctx.id, ctx.tenant)
        self._placement.take(ctx)
        self._place(sock, ctx)
        POOL_SLOT_WAIT.labels(self.provider).observe(0.0)
        self._grow_ahead()
        self._gauges()
        return True

    def _abandon(self, w: Request) -> None:
        self._placement.remove(w)
        placed = w.fut.done() and not w.fut.cancelled()
        if not w.fut.done():
            w.fut.cancel()
        if w.resume:
            self._release(w.ctx)  # whatever it got back meanwhile; it stays dormant on its socket
        elif placed:
            w.ctx.abort()  # placed just as the caller gave up: close it upstream, release at its final
        else:
            self._release(w.ctx)  # never placed: only the account permit was taken

    def _pump(self) -> None:
        """Serve waiters in order (see :class:`PlacementLine`), growing the pool where a key needs it."""
        if self._closed:
            return
        cap, pack = self.settings.pool_contexts_per_socket, self.settings.pool_pregrow
        self._placement.serve(
            lambda ctx: self._sockets.of(ctx.spec.key).best_slot(cap, pack) or self._grow(ctx.spec.key), self._place)
        self._grow_ahead()
        self._gauges()

    def _grow(self, key: SocketKey) -> UpstreamSocket | None:
        if len(self._sockets) >= self.settings.pool_max_sockets:
            victim = self._sockets.evictable(key, keep=self.default_key)
            if victim is None:
                return None
            self._retire(victim, "evicted")
        return self._open(key)

    def _place(self, sock: UpstreamSocket, ctx: UpstreamContext) -> None:
        reused = sock.uses > 0
        sock.assign(ctx)
        POOL_SOCKET_USES.labels(self.provider, "reused" if reused else "new").inc()
        self._placed(sock)  # growth: a spare for the key (or the growth ahead of demand, in the pump)

    def _open(self, key: SocketKey) -> UpstreamSocket:
        assert self._session is not None
        delay = self.dialer.reserve(key, time.monotonic())
        sock = UpstreamSocket(key, url=key.url(self._ws_base), session=self._session, headers=self._headers,
                              listener=self, connect_timeout_s=self._connect_timeout_s,
                              heartbeat_s=self._heartbeat_s, delay_s=delay, provider=self.provider,
                              hold=lambda booked: self.dialer.recheck(booked, time.monotonic()))
        self._sockets.add(sock)
        self._every.add(sock)
        sock.start()
        assert sock.task is not None
        sock.task.add_done_callback(lambda _t: self._every.discard(sock))
        log.debug("upstream_socket_dialling", socket=sock.sid, delay_ms=round(delay * 1000), **key.label())
        self._gauges()
        return sock

    def _retire(self, sock: UpstreamSocket, why: str) -> None:
        self._sockets.remove(sock)
        log.debug("upstream_socket_retired", socket=sock.sid, why=why)
        task = asyncio.create_task(sock.close(), name=f"elevenlabs-close-{sock.sid}",
                                   context=contextvars.Context())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)
        self._gauges()

    def _release(self, ctx: UpstreamContext) -> None:
        """``ctx`` is done upstream: its permits (this process's and the account's) return (idempotent)."""
        if ctx.placing is not None and ctx.placing is not asyncio.current_task():
            ctx.placing.cancel()  # a dormant context asking for permits again: it needs none now
        self._placement.release(ctx)
        if self._account is not None:
            self._account.release(ctx.id)

    # -- SocketListener / ContextHost ---------------------------------------------------------------------
    def socket_opened(self, sock: UpstreamSocket) -> None:
        """Handshake done: an idle socket it replaces can go now (make-before-break)."""
        self._changed.set()
        self.dialer.opened()
        for old in self._sockets.of(sock.key).refreshed():
            if self._replaced(old):
                self._retire(old, "refreshed")
        self._gauges()

    def socket_closed(self, sock: UpstreamSocket, failure: Failure | None, orphans: list[UpstreamContext]) -> None:
        """A socket ended: move or end its contexts, back off if it failed, and restore capacity."""
        self._sockets.remove(sock)
        self._changed.set()
        if failure is not None:
            UPSTREAM_ERRORS.labels(self.provider, failure.reason).inc()
            if not self._closed:
                POOL_RECONNECTS.labels(self.provider, failure.reason).inc()
                if failure.reason == "busy":
                    self.dialer.busy(time.monotonic(), sock.retry_after_s, sock.booked_at)
                elif failure.reason not in _BENIGN:
                    self.dialer.failed(sock.key)
            benign = failure.reason in _BENIGN and not sock.lost_contexts
            (log.info if benign else log.warning)(
                "upstream_socket_closed", socket=sock.sid, reason=failure.reason, code=failure.error.code,
                lost_contexts=sock.lost_contexts, **sock.key.label())
        for ctx in orphans:
            self._rehome(ctx, failure, reached=sock.opened_at is not None)
        if not self._closed:
            self._ensure_min()
            self._pump()
        self._gauges()

    def context_freed(self, sock: UpstreamSocket, ctx: UpstreamContext) -> None:
        """A final arrived: the permit returns and the slot serves the next waiter."""
        self._release(ctx)
        if sock.load == 0 and (sock.draining or (sock.replacing and self._replaced(sock))):
            self._retire(sock, "drained")
        self._pump()

    def socket_degraded(self, sock: UpstreamSocket) -> None:
        """``sock`` drains: restore the minimum with a fresh one."""
        if sock.load == 0:
            self._retire(sock, "degraded")
        self._ensure_min()
        self._gauges()

    def socket_healthy(self, sock: UpstreamSocket) -> None:
        """Audio flows on ``sock``: its key needs no more backoff."""
        self.dialer.healthy(sock.key)
