"""The upstream socket pool: placement under the per-socket cap, sizing, liveness and replacement.

Placement is asked for at a context's first non-blank text, not when its job starts, and a placed
context that idles gives its permits back (:mod:`.lazy`).

Placement: a context goes to the least-loaded open socket of its :class:`SocketKey` with a free
slot (a slot frees only at the context's final), else to a new socket while the pool is under
``pool_max_sockets``. Every live context also holds one of ``upstream_concurrency`` permits (the
account's concurrent-generation limit); beyond it, requests wait in FIFO order for at most
``upstream_slot_wait_s`` and then get ``UpstreamBusy``. With Redis the permit is account-wide
(:class:`~.account_limit.AccountLimit`, shared by every worker) and taken before the context joins
this process's line, so the line orders by arrival across workers; the per-process count stays as
the fallback when there is no Redis, or it is unreachable. Both permits return together at the
context's final, failure or socket end; a transparent retry keeps them.

Liveness: initialised contexts get per-context keep-alives. An idle socket (no contexts) is never
pinged, because every message without a ``context_id`` targets a server-side default context that
may take a slot; instead, shortly before its inactivity deadline it is refreshed make-before-break
(a replacement is dialled, then the idle one is closed by us), so the prewarmed minimum never
lapses and the server never closes a socket for inactivity. Sockets past ``pool_max_socket_age_s``
drain (no new contexts, existing ones finish) and are replaced the same way.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections import OrderedDict
from typing import Any

import aiohttp

from shared.errors import UpstreamBusy, UpstreamDisconnected, UpstreamError
from shared.logging import get_logger
from shared.metrics import (
    POOL_CONTEXT_RETRIES,
    POOL_CONTEXTS,
    POOL_RECONNECTS,
    POOL_SLOT_WAIT,
    POOL_SOCKET_USES,
    POOL_SOCKETS,
    UPSTREAM_ERRORS,
)
from shared.settings import Settings

from worker.upstream_permits import AccountLimit
from .admission import Admission, Waiter
from .connection import SocketState, UpstreamSocket
from .context import UpstreamContext
from .lazy import PermitTiming
from .messages import Failure
from .options import SocketKey, default_key

log = get_logger(__name__)

MAX_ATTEMPTS = 3  # placements per context: the first one plus two transparent retries
_BACKOFF_BASE_S = 0.05
_BACKOFF_MAX_S = 5.0
_BENIGN = frozenset({"inactivity", "closed"})  # an idle socket closed by the server is not an outage
# Keys with recent connect failures (for backoff), least recently failed dropped first: every voice,
# model and format a client names is a key, so this map must not grow with them.
FAILURE_MEMORY = 256


class SocketPool(PermitTiming):
    """Every upstream socket of one provider instance, shared by all the worker's jobs."""

    def __init__(self, settings: Settings, *, ws_base: str, headers: dict[str, str],
                 provider: str = "elevenlabs", account: AccountLimit | None = None) -> None:
        """Configure from ``settings``; nothing connects before :meth:`start`; ``account``: shared permits."""
        self.settings = settings
        self.provider = provider
        self._ws_base = ws_base
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._sockets: dict[SocketKey, list[UpstreamSocket]] = {}
        self._every: set[UpstreamSocket] = set()  # until each socket's task has finished
        self._closers: set[asyncio.Task[None]] = set()
        self._admission = Admission(settings.upstream_concurrency)
        self._account = account
        self._failures: OrderedDict[SocketKey, int] = OrderedDict()
        self._unplaced: set[UpstreamContext] = set()  # opened, not (yet) on a socket
        self._placing: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
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
        first = list(self._sockets.get(self.default_key, ()))
        deadline = time.monotonic() + self._connect_timeout_s
        while any(s.state is SocketState.CONNECTING for s in first):
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):  # not wait_for: it can swallow a racing cancel on 3.11
                    await self._changed.wait()
            except TimeoutError:
                break
        opened = self._count_open(self.default_key)
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
        shutdown = UpstreamDisconnected("provider shut down")
        for task in list(self._placing):
            task.cancel()
        if self._placing:
            await asyncio.wait(list(self._placing))
        for ctx in list(self._unplaced):
            ctx.fail(UpstreamDisconnected("provider shut down", audio_sent=ctx.audio_sent))
        self._unplaced.clear()
        for w in self._admission.drain():
            if w.fut is not None and not w.fut.done():
                w.fut.set_exception(UpstreamError("provider shut down"))
                w.fut.exception()  # retrieved here; acquire() re-raises it
            if w.fut is None:
                w.ctx.fail(UpstreamDisconnected("provider shut down", audio_sent=w.ctx.audio_sent))
                self._release(w.ctx)
        for sock in self._all():
            for ctx in list(sock.contexts.values()):
                ctx.fail(type(shutdown)(shutdown.message, audio_sent=ctx.audio_sent))
        self._sockets.clear()
        await asyncio.gather(*(s.close() for s in list(self._every)), return_exceptions=True)
        if self._closers:
            await asyncio.wait(list(self._closers))
        if self._account is not None:
            await self._account.close()
        self._gauges()

    # -- admission ----------------------------------------------------------------------------------------
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
                UPSTREAM_ERRORS.labels(self.provider, "busy").inc()
                log.info("upstream_busy", **e.details)
                raise
            if self._closed:
                self._account.release(ctx.id)
                raise UpstreamError("the ElevenLabs provider shut down")
        w = Waiter(ctx, asyncio.get_running_loop().create_future(), True, t0, resume=resume)
        assert w.fut is not None
        self._admission.append(w)
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
        limit = "concurrency" if self._admission.exhausted else "sockets"
        UPSTREAM_ERRORS.labels(self.provider, "busy").inc()
        log.info("upstream_busy", limit=limit, waited_ms=round(waited * 1000, 1), waiting=len(self._admission))
        raise UpstreamBusy(f"all upstream {limit} slots stayed busy for {waited:.1f}s", limit=limit,
                           waited_s=round(waited, 3))

    def _abandon(self, w: Waiter) -> None:
        self._admission.remove(w)
        if w.resume:
            if w.fut is not None and not w.fut.done():
                w.fut.cancel()
            self._release(w.ctx)  # whatever it got back meanwhile; it stays dormant on its socket
            return
        if w.fut is not None and w.fut.done() and not w.fut.cancelled():
            w.ctx.abort()  # placed just as the caller gave up: close it upstream, release at its final
        elif w.fut is not None:
            w.fut.cancel()
            self._release(w.ctx)  # never placed: only the account permit was taken

    def _pump(self) -> None:
        """Serve waiters in order (see :class:`Admission`), growing the pool where a key needs it."""
        if self._closed:
            return
        self._admission.serve(lambda ctx: self._find_slot(ctx.spec.key) or self._grow(ctx.spec.key),
                              self._place)
        self._gauges()

    def _find_slot(self, key: SocketKey) -> UpstreamSocket | None:
        cap = self.settings.pool_contexts_per_socket
        best: UpstreamSocket | None = None
        best_rank: tuple[bool, bool, int] | None = None
        for sock in self._sockets.get(key, ()):
            if sock.draining or sock.state is SocketState.CLOSED or sock.load >= cap:
                continue
            # Open before dialling, fresh before refreshing, then spread: least loaded first.
            rank = (sock.replacing, sock.state is not SocketState.OPEN, sock.load)
            if best_rank is None or rank < best_rank:
                best, best_rank = sock, rank
        return best

    def _grow(self, key: SocketKey) -> UpstreamSocket | None:
        if self._count() >= self.settings.pool_max_sockets:
            victim = self._evictable(key)
            if victim is None:
                return None
            self._retire(victim, "evicted")
        return self._open(key)

    def _evictable(self, key: SocketKey) -> UpstreamSocket | None:
        idle = [s for k, socks in self._sockets.items() if k != key for s in socks
                if s.state is SocketState.OPEN and s.load == 0]
        if not idle:
            return None
        # Keep the prewarmed default sockets if anything else can go; then the longest idle.
        return min(idle, key=lambda s: (s.key == self.default_key, s.last_sent))

    def _place(self, sock: UpstreamSocket, ctx: UpstreamContext) -> None:
        reused = sock.uses > 0
        sock.assign(ctx)
        POOL_SOCKET_USES.labels(self.provider, "reused" if reused else "new").inc()
        cap = self.settings.pool_contexts_per_socket
        free = sum(cap - s.load for s in self._sockets.get(sock.key, ())
                   if not s.draining and s.state is not SocketState.CLOSED)
        if free == 0 and self._count() < self.settings.pool_max_sockets \
                and not self._admission.exhausted:
            self._open(sock.key)  # headroom: the next context of this key should not wait for a handshake

    def _open(self, key: SocketKey) -> UpstreamSocket:
        assert self._session is not None
        fails = self._failures.get(key, 0)
        delay = 0.0
        if fails:
            delay = min(_BACKOFF_BASE_S * 2 ** (fails - 1), _BACKOFF_MAX_S) * random.uniform(0.5, 1.0)
        sock = UpstreamSocket(key, url=key.url(self._ws_base), session=self._session, headers=self._headers,
                              listener=self, connect_timeout_s=self._connect_timeout_s,
                              heartbeat_s=self._heartbeat_s, delay_s=delay, provider=self.provider)
        self._sockets.setdefault(key, []).append(sock)
        self._every.add(sock)
        sock.start()
        assert sock.task is not None
        sock.task.add_done_callback(lambda _t: self._every.discard(sock))
        log.debug("upstream_socket_dialling", socket=sock.sid, delay_ms=round(delay * 1000), **key.label())
        self._gauges()
        return sock

    def _retire(self, sock: UpstreamSocket, why: str) -> None:
        self._remove(sock)
        log.debug("upstream_socket_retired", socket=sock.sid, why=why)
        task = asyncio.create_task(sock.close(), name=f"elevenlabs-close-{sock.sid}",
                                   context=contextvars.Context())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)
        self._gauges()

    def _remove(self, sock: UpstreamSocket) -> None:
        socks = self._sockets.get(sock.key)
        if socks is not None and sock in socks:
            socks.remove(sock)
            if not socks:
                del self._sockets[sock.key]

    def _requeue(self, ctx: UpstreamContext, failure: Failure) -> None:
        ctx.prepare_retry()
        POOL_CONTEXT_RETRIES.labels(self.provider).inc()
        log.info("upstream_context_retry", context_id=ctx.id, attempt=ctx.attempts + 1, reason=failure.reason)
        w = Waiter(ctx, None, not ctx.holds_permit, time.monotonic(), failure)
        wait = max(self.settings.upstream_slot_wait_s, ctx.timeout_s)
        w.timer = asyncio.get_running_loop().call_later(wait, self._retry_expired, w)
        self._admission.insert_retry(w)

    def _retry_expired(self, w: Waiter) -> None:
        if not self._admission.remove(w):
            return
        assert w.failure is not None
        w.ctx.fail(w.failure.for_context(w.ctx.audio_sent))
        self._release(w.ctx)
        self._pump()

    def _release(self, ctx: UpstreamContext) -> None:
        """``ctx`` is done upstream: its permits (this process's and the account's) return (idempotent)."""
        if ctx.placing is not None and ctx.placing is not asyncio.current_task():
            ctx.placing.cancel()  # a dormant context asking for permits again: it needs none now
        self._admission.release(ctx)
        if self._account is not None:
            self._account.release(ctx.id)

    # -- SocketListener / ContextHost ---------------------------------------------------------------------
    def socket_opened(self, sock: UpstreamSocket) -> None:
        """Handshake done: an idle socket it replaces can go now (make-before-break)."""
        self._changed.set()
        for old in list(self._sockets.get(sock.key, ())):
            if old.replacing and old.load == 0 and self._replaced(old):
                self._retire(old, "refreshed")
        self._gauges()

    def socket_closed(self, sock: UpstreamSocket, failure: Failure | None) -> None:
        """A socket ended: count it, back off its key if it failed, and restore capacity."""
        self._remove(sock)
        self._changed.set()
        if failure is not None:
            UPSTREAM_ERRORS.labels(self.provider, failure.reason).inc()
            if not self._closed:
                POOL_RECONNECTS.labels(self.provider, failure.reason).inc()
                if failure.reason not in _BENIGN:
                    self._failures[sock.key] = self._failures.pop(sock.key, 0) + 1
                    while len(self._failures) > FAILURE_MEMORY:
                        self._failures.popitem(last=False)
            benign = failure.reason in _BENIGN and not sock.lost_contexts
            (log.info if benign else log.warning)(
                "upstream_socket_closed", socket=sock.sid, reason=failure.reason, code=failure.error.code,
                lost_contexts=sock.lost_contexts, **sock.key.label())
        if not self._closed:
            self._ensure_min()
            self._pump()
        self._gauges()

    def context_orphaned(self, ctx: UpstreamContext, failure: Failure | None) -> None:
        """Retry a context that produced no audio yet on another socket; otherwise end it."""
        if failure is None or self._closed or not ctx.live:
            if ctx.live:
                ctx.fail(UpstreamDisconnected("provider shut down", audio_sent=ctx.audio_sent))
            self._release(ctx)
            return
        # A dormant context holds no permit to carry over: it fails, and the gateway (which has its text)
        # retries it if no audio went out.
        if failure.retry and not ctx.no_retry and not ctx.audio_sent and ctx.attempts < MAX_ATTEMPTS \
                and not ctx.dormant:
            self._requeue(ctx, failure)
            return
        ctx.fail(ctx.timeout_error() if ctx.no_retry else failure.for_context(ctx.audio_sent))
        self._release(ctx)

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
        self._failures.pop(sock.key, None)

    def unplaced_cancelled(self, ctx: UpstreamContext) -> None:
        """A context cancelled while waiting for a (first or retry) placement gives its permit back."""
        self._unplaced.discard(ctx)
        if ctx.placing is not None and ctx.placing is not asyncio.current_task():
            ctx.placing.cancel()  # its acquire gives back a ticket or a permit it got meanwhile
        w = self._admission.find(ctx)
        if w is not None:
            self._admission.remove(w)
        self._release(ctx)
        self._pump()

    # -- maintenance --------------------------------------------------------------------------------------
    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self._tick(time.monotonic())
            except Exception:
                log.exception("upstream_pool_tick_failed")

    def _tick(self, now: float) -> None:
        max_age = self.settings.pool_max_socket_age_s
        for sock in self._all():
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
                        sock.replacing = True
                        POOL_RECONNECTS.labels(self.provider, "idle_refresh").inc()
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

    def _needed(self, sock: UpstreamSocket) -> bool:
        """Would closing ``sock`` drop its key below the prewarmed minimum?"""
        if sock.key != self.default_key:
            return False
        others = sum(1 for s in self._sockets.get(sock.key, ())
                     if s is not sock and not s.draining and not s.replacing)
        return others < self.settings.pool_min_sockets

    def _replaced(self, sock: UpstreamSocket) -> bool:
        """Are enough other sockets of its key open that closing ``sock`` keeps the minimum?"""
        others = sum(1 for s in self._sockets.get(sock.key, ())
                     if s is not sock and s.state is SocketState.OPEN and not s.draining)
        wanted = self.settings.pool_min_sockets if sock.key == self.default_key else 0
        return others >= max(1, wanted)

    def _ensure_min(self) -> None:
        key = self.default_key
        if key is None or self._closed or self._session is None:
            return
        have = sum(1 for s in self._sockets.get(key, ()) if not s.draining and not s.replacing)
        while have < self.settings.pool_min_sockets and self._count() < self.settings.pool_max_sockets:
            self._open(key)
            have += 1

    # -- views --------------------------------------------------------------------------------------------
    def _all(self) -> list[UpstreamSocket]:
        return [s for socks in self._sockets.values() for s in socks]

    def _count(self) -> int:
        return sum(len(socks) for socks in self._sockets.values())

    def _count_open(self, key: SocketKey) -> int:
        return sum(1 for s in self._sockets.get(key, ()) if s.state is SocketState.OPEN)

    def _state_counts(self) -> dict[str, int]:
        counts = {"connecting": 0, "open": 0, "draining": 0}
        for s in self._all():
            if s.state is SocketState.CLOSED:
                continue
            counts["draining" if s.draining else s.state.value] += 1
        return counts

    def _gauges(self) -> None:
        for state, n in self._state_counts().items():
            POOL_SOCKETS.labels(self.provider, state).set(n)
        POOL_CONTEXTS.labels(self.provider).set(self._admission.live)

    def status(self) -> dict[str, Any]:
        """Pool state for /admin/status: sockets by state, live and waiting contexts, limits."""
        now = time.monotonic()
        return {
            "sockets": self._state_counts(),
            "live_contexts": self._admission.live,
            "waiting": len(self._admission),
            "unplaced_contexts": len(self._unplaced),
            "dormant_contexts": sum(1 for s in self._all() for c in s.contexts.values() if c.dormant),
            "keys": len(self._sockets),
            "limits": {
                "min_sockets": self.settings.pool_min_sockets,
                "max_sockets": self.settings.pool_max_sockets,
                "contexts_per_socket": self.settings.pool_contexts_per_socket,
                "concurrency": self.settings.upstream_concurrency,
            },
            "account": self._account.status() if self._account is not None else {"scope": "worker"},
            "socket_list": [
                {"id": s.sid, "state": "draining" if s.draining else s.state.value, "contexts": s.load,
                 "age_s": round(now - (s.opened_at or s.created_at), 1), "voice_id": s.key.voice_id,
                 "format": s.key.output_format}
                for s in self._all()
            ],
        }
