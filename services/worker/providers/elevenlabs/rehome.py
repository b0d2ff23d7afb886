"""What happens to a context whose socket ended under it (a mixin of the pool).

A context without audio moves to another socket if the retry policy (:func:`shared.retry.decide`,
asked as ``worker_pool``) allows; a socket whose handshake failed never reached the upstream, so it
costs its contexts no attempt: they wait for the next socket. A context whose audio already went
out moves too when it can resume losslessly (*failover*: its alignment says where the listener
stopped; see :mod:`.resume`), at most ``FAILOVER_MAX_PER_CONTEXT`` times, even after a stall used up
its deadline (it made progress; the new socket gets a fresh one). When no socket opens within its
deadline, the local voice may speak the rest (``FAILOVER_LOCAL_VOICE``, :mod:`.localtail`).
"""

from __future__ import annotations

import asyncio
import time

from shared.errors import UpstreamDisconnected
from shared.logging import get_logger
from shared.metrics import POOL_CONTEXT_RETRIES, UPSTREAM_FAILOVERS
from shared.retry import decide
from shared.settings import Settings
from worker.providers.base import Provider

from .context import UpstreamContext
from .messages import Failure
from .placement import Move, PlacementLine

log = get_logger(__name__)


class Rehoming:
    """Moving, resuming or ending the contexts of a socket that ended (``SocketPool`` provides the rest)."""

    settings: Settings
    provider: str
    fallback: Provider | None
    _closed: bool
    _placement: PlacementLine

    def _release(self, ctx: UpstreamContext) -> None:
        raise NotImplementedError

    def _pump(self) -> None:
        raise NotImplementedError

    def _rehome(self, ctx: UpstreamContext, failure: Failure | None, reached: bool) -> None:
        """``ctx``'s socket ended under it: move it if the retry policy allows, else end it.

        ``reached``: the socket had opened, so the upstream saw the context; a placement on a socket
        whose handshake failed is no attempt (the context waits for the next socket instead)."""
        if ctx.local is not None:
            self._release(ctx)  # the local voice has it; the socket only held its (closing) upstream slot
            return
        if failure is None or self._closed or not ctx.live:
            if ctx.live:
                ctx.fail(UpstreamDisconnected("provider shut down", audio_sent=ctx.audio_sent))
            self._release(ctx)
            return
        gave_up = False  # no socket got through for a whole deadline: the upstream is unreachable
        if reached:
            ctx.unreached_since = None
        else:
            ctx.attempts -= 1
            now = time.monotonic()
            if ctx.unreached_since is None:
                ctx.unreached_since = now
            gave_up = now - ctx.unreached_since >= ctx.timeout_s
        # A dormant context holds no permit to carry over: it fails, and the gateway (which has its text)
        # retries it if no audio went out.
        if ctx.audio_sent:
            if not gave_up and ctx.resumable and decide(
                    failure.error.code, audio_sent=True, attempt=len(ctx.failovers) + 1, asker="worker_pool",
                    max_retries=self.settings.failover_max_per_context, resumable=True):
                self._move(ctx, failure, reached)
                return
        elif not (ctx.no_retry or gave_up or ctx.dormant) and decide(
                failure.error.code, audio_sent=False, attempt=ctx.attempts, asker="worker_pool"):
            self._move(ctx, failure)
            return
        if gave_up and self.to_local(ctx, failure):
            return
        ctx.fail(ctx.timeout_error() if ctx.no_retry else failure.for_context(ctx.audio_sent))
        self._release(ctx)

    def _move(self, ctx: UpstreamContext, failure: Failure, reached: bool = True) -> None:
        ctx.prepare_retry(failure.reason, failure.error.code, again=reached)
        if ctx.audio_sent and not reached:
            log.debug("upstream_context_still_moving", context_id=ctx.id, reason=failure.reason)
        elif ctx.audio_sent:
            UPSTREAM_FAILOVERS.labels(self.provider, failure.reason).inc()
            log.info("upstream_context_failover", context_id=ctx.id, at_char=ctx.failovers[-1]["at_char"],
                     failover=len(ctx.failovers), reason=failure.reason)
        else:
            POOL_CONTEXT_RETRIES.labels(self.provider).inc()
            log.info("upstream_context_retry", context_id=ctx.id, attempt=ctx.attempts + 1, reason=failure.reason)
        w = Move(ctx, failure, not ctx.holds_permit, time.monotonic())
        wait = max(self.settings.upstream_slot_wait_s, ctx.timeout_s)
        w.timer = asyncio.get_running_loop().call_later(wait, self._move_expired, w)
        self._placement.insert_move(w)

    def _move_expired(self, w: Move) -> None:
        if not self._placement.remove(w):
            return
        if not self.to_local(w.ctx, w.failure):
            w.ctx.fail(w.failure.for_context(w.ctx.audio_sent))
            self._release(w.ctx)
        self._pump()

    def to_local(self, ctx: UpstreamContext, failure: Failure) -> bool:
        """No socket within the deadline: the local voice speaks the rest, if allowed and lossless (True)."""
        if ctx.local is not None:
            return True
        if self.fallback is None or not ctx.live or not ctx.audio_sent or not ctx.resume_point.usable:
            return False
        log.warning("upstream_context_to_local_voice", context_id=ctx.id, reason=failure.reason)
        UPSTREAM_FAILOVERS.labels(self.provider, "local_voice").inc()
        ctx.speak_locally(self.fallback, failure.reason, failure.error.code)
        self._release(ctx)  # the upstream permits: the local voice needs none
        return True

