"""One client session, independent of its wire protocol: contexts in, audio/final/error events out.

Each protocol adapter (native WebSocket, ElevenLabs-compatible WebSocket, HTTP) drives a session:
``start``/``send_text``/``end_input``/``cancel`` in, ``next_event()`` out. The session owns its
pub/sub subscription (made before any job is enqueued), drops frames of jobs it no longer waits
for (stale audio never leaks into the next context), checks sequence continuity, and decides
retries: only before a context's first audio went out. Frames in and events out are in
:mod:`gateway.session_frames`; contexts and their jobs are here.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from redis.exceptions import RedisError

from gateway.accounting import count_end, final_event
from gateway.cache import Hit, Recorder
from gateway.contexts import AWAITING_TEXT, DONE, QUEUED, ContextRequest, ContextState
from gateway.events import ErrorEvent, SessionClosing
from gateway.metering import meter_context
from gateway.services import GatewayServices
from gateway.session_frames import SessionFrames
from shared import keys, metrics, protocol
from shared.errors import (
    ContextClosed,
    ContextExists,
    Draining,
    ServiceUnavailable,
    SlowConsumer,
    TextTooLong,
    TooManyContexts,
    TTSError,
    UnknownContext,
)
from shared.logging import get_logger
from shared.retry import decide

log = get_logger(__name__)
# Ended contexts remembered per session so late messages get ``context_closed``, not ``unknown_context``.
_ENDED_MEMORY = 256
# Session closes under way (see SynthesisSession.close).
_CLOSING: set[asyncio.Task[None]] = set()


class SynthesisSession(SessionFrames):
    """Contexts of one client connection and the events they produce (a ``LiveSession``)."""

    def __init__(self, services: GatewayServices, *, api: str, tenant: str = "",
                 max_contexts: int | None = None) -> None:
        self.services = services
        self.settings = services.settings
        self.id = uuid.uuid4().hex
        self.api = api
        self.tenant = tenant
        self.max_contexts = max_contexts or self.settings.max_contexts_per_session
        self.channel = keys.session_channel(self.id)
        self.contexts: dict[str, ContextState] = {}
        self._jobs: dict[str, ContextState] = {}
        self._ended: dict[str, None] = {}
        # Phrase-cache misses being recorded, by context id: stored if the context completes.
        self._recorders: dict[str, Recorder] = {}
        self.closed = False
        self._init_frames()

    # ---- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        """Subscribe to the session channel; must complete before any job is enqueued."""
        try:
            await self.services.hub.subscribe(self.channel, self._on_frame)
        except (TimeoutError, RedisError, OSError) as e:
            raise ServiceUnavailable("the queue (Redis) is unreachable") from e
        self.services.registry.add(self)
        metrics.ACTIVE_SESSIONS.labels(self.api).inc()

    async def close(self) -> None:
        """Cancel every live context (their upstream contexts close) and unsubscribe.

        Runs to completion even when the caller is cancelled: aiohttp cancels the handler of a connection
        that closed, often while it is in this very cleanup, and an interrupted close left the session
        registered and its contexts streaming upstream for nobody.
        """
        if self.closed:
            return
        self.closed = True
        task = asyncio.get_running_loop().create_task(self._close(), name=f"session-close-{self.id}")
        _CLOSING.add(task)  # shield() keeps no strong reference of its own
        task.add_done_callback(_CLOSING.discard)
        await asyncio.shield(task)

    async def _close(self) -> None:
        for ctx in list(self.contexts.values()):
            if ctx.live:
                await self.cancel_job(ctx, "cancelled")
                self._end(ctx, "cancelled")
        self.services.registry.remove(self)
        metrics.ACTIVE_SESSIONS.labels(self.api).dec()
        try:
            await self.services.hub.unsubscribe(self.channel)
        except (RedisError, OSError):
            pass

    def live_context_count(self) -> int:
        """Contexts not yet ended."""
        return sum(1 for c in self.contexts.values() if c.live)

    # ---- commands from the client ------------------------------------------------------------------
    async def start(self, request: ContextRequest) -> ContextState:
        """Begin a context and enqueue its job."""
        cid = request.context_id
        if self.services.draining:
            # Refuse new work but keep the session: its in-flight contexts finish within the grace.
            raise Draining("gateway is restarting: start new contexts on a new connection", context_id=cid)
        existing = self.contexts.get(cid)
        if existing is not None and existing.live:
            raise ContextExists(f"context {cid!r} is still running", context_id=cid)
        if self.live_context_count() >= self.max_contexts:
            raise TooManyContexts(f"at most {self.max_contexts} concurrent contexts per session",
                                  context_id=cid)
        if self.overflowed:  # being closed for not reading: a cache hit would only queue more
            raise SlowConsumer("client is not reading audio fast enough", context_id=cid)
        if len(request.text) > self.settings.max_context_chars:
            raise TextTooLong(f"a context holds at most {self.settings.max_context_chars} characters",
                              context_id=cid)
        ctx = ContextState(request=request, session_id=self.id, tenant=self.tenant)
        limits = self.services.key_limits
        if limits is not None:
            await limits.admit(ctx)  # raises before anything exists
            if self.closed:  # the client left while we were asking: give the slot straight back
                limits.release(ctx, "cancelled")
                raise ContextClosed("the session closed", context_id=cid)
        self.contexts[cid] = ctx
        self._ended.pop(cid, None)
        self._jobs[ctx.job_id] = ctx
        metrics.ACTIVE_CONTEXTS.inc()
        cache = self.services.cache
        cached = await cache.lookup(request, self.tenant) if cache is not None else None
        if isinstance(cached, Hit):
            self._replay(ctx, cached.chunks)  # no job: the cached frames are the answer
            return ctx
        if cached is not None:
            self._recorders[cid] = cached
        if not request.text.strip() and not request.input_closed:
            # Nothing to speak yet: the job waits for the first text and carries it (one Redis hop
            # less to first audio than enqueue now + deliver the text to the running job later).
            ctx.state = AWAITING_TEXT
            return ctx
        try:
            await self._enqueue(ctx)
        except (RedisError, OSError) as e:
            self._end(ctx, "failed", "service_unavailable")
            raise ServiceUnavailable("the queue (Redis) is unreachable", context_id=cid) from e
        ctx.trace.enqueued()
        return ctx

    async def send_text(self, context_id: str, text: str, flush: bool = False) -> None:
        """Append text to a running context (in order, even before its worker listens)."""
        ctx = self._live(context_id)
        if ctx.input_closed:
            raise ContextClosed(f"context {context_id!r} was ended; start a new one", context_id=context_id)
        if ctx.characters + len(text) > self.settings.max_context_chars:
            raise TextTooLong(f"a context holds at most {self.settings.max_context_chars} characters",
                              context_id=context_id)
        if self.services.key_limits is not None:
            await self.services.key_limits.reserve_text(ctx, len(text))
        now = time.monotonic()
        ctx.text_parts.append(text)
        ctx.characters += len(text)
        if ctx.ttfa_origin is None and text.strip():
            ctx.ttfa_origin = now
        if flush:
            ctx.owed_since = now
        if ctx.state == AWAITING_TEXT:
            if text.strip() or flush:  # blank keep-alive text starts nothing (it rides in the job later)
                await self._enqueue_deferred(ctx)
            return
        await self._push(ctx, protocol.TextInput(ctx.next_input_seq(), text, flush))

    async def end_input(self, context_id: str) -> None:
        """No more text for the context; its final follows the remaining audio."""
        ctx = self._live(context_id)
        if ctx.input_closed:
            return
        ctx.input_closed = True
        ctx.owed_since = time.monotonic()
        if ctx.state == AWAITING_TEXT:
            await self._enqueue_deferred(ctx)
            return
        await self._push(ctx, protocol.EndInput(ctx.next_input_seq()))

    async def cancel(self, context_id: str, reason: str = "cancelled") -> None:
        """Barge-in: end the context now; no audio of it is delivered after this returns."""
        ctx = self.contexts.get(context_id)
        if ctx is None or not ctx.live:
            if ctx is not None or context_id in self._ended:
                return  # already over: cancelling twice is harmless
            raise UnknownContext(f"no context {context_id!r} in this session", context_id=context_id)
        self._end(ctx, "cancelled")
        self._post(final_event(ctx, "cancelled"))
        await self.cancel_job(ctx, reason)

    # ---- events to the client (the frames' own: SessionFrames) ----------------------------------------
    def fail_context(self, ctx: ContextState, error: TTSError) -> None:
        """End a context with an error event (used by the monitor and by Redis outages)."""
        if not ctx.live:
            return
        self._end(ctx, "failed", error.code)
        self._post(ErrorEvent(ctx.context_id, error))

    def close_with(self, error: TTSError) -> None:
        """Ask the adapter to end the session with ``error`` (drain, Redis loss of a whole session)."""
        self._post(SessionClosing(error))

    # ---- internals ------------------------------------------------------------------------------------
    def _live(self, context_id: str) -> ContextState:
        ctx = self.contexts.get(context_id)
        if ctx is None or not ctx.live:
            if ctx is not None or context_id in self._ended:
                raise ContextClosed(f"context {context_id!r} already ended", context_id=context_id)
            raise UnknownContext(f"no context {context_id!r} in this session", context_id=context_id)
        return ctx

    async def _enqueue(self, ctx: ContextState) -> None:
        """Enqueue the context's current job (its spec carries all text so far)."""
        ctx.enqueued = True
        await self.services.queue.enqueue(ctx.job_spec())

    async def _enqueue_deferred(self, ctx: ContextState) -> None:
        """Enqueue a context that waited for its first text, now that it has some."""
        ctx.state = QUEUED
        ctx.enqueued_at = time.monotonic()  # the job-start deadline runs from here
        ctx.trace.text_arrived()
        try:
            await self._enqueue(ctx)
        except (RedisError, OSError) as e:
            self.fail_context(ctx, ServiceUnavailable("lost the queue (Redis) mid-context"))
            raise ServiceUnavailable("the queue (Redis) is unreachable", context_id=ctx.context_id) from e
        ctx.trace.enqueued()

    async def _push(self, ctx: ContextState, msg: protocol.Message) -> None:
        try:
            await self.services.queue.push_input(ctx.job_id, msg)
        except (RedisError, OSError) as e:
            self.fail_context(ctx, ServiceUnavailable("lost the queue (Redis) mid-context"))
            raise ServiceUnavailable("the queue (Redis) is unreachable", context_id=ctx.context_id) from e

    async def cancel_job(self, ctx: ContextState, reason: str) -> None:
        """Tell the context's current job to stop; its upstream context closes (best effort)."""
        if not ctx.enqueued:
            return  # it never had a job (ended while awaiting its first text)
        try:
            await self.services.queue.push_input(ctx.job_id, protocol.Cancel(ctx.next_input_seq(), reason))
        except (RedisError, OSError):
            pass  # the job's worker will find nobody listening and stop by itself

    def _end(self, ctx: ContextState, outcome: str, code: str | None = None) -> None:
        if self.services.key_limits is not None:
            self.services.key_limits.release(ctx, outcome)  # settles in the background
        ctx.state = DONE
        ctx.usage = meter_context(self.services.metering, ctx, outcome)  # usage metering: on the final, into Redis
        self._jobs.pop(ctx.job_id, None)
        self._recorders.pop(ctx.context_id, None)
        # Only the id is remembered (late messages get context_closed); the state goes now. Kept until
        # _ENDED_MEMORY pushed it out, it cost ~1.6 KB a turn (a long session held 256 of them) and the
        # monitor scanned every one of them five times a second.
        if self.contexts.get(ctx.context_id) is ctx:
            del self.contexts[ctx.context_id]
        self._ended[ctx.context_id] = None
        if len(self._ended) > _ENDED_MEMORY:
            del self._ended[next(iter(self._ended))]
        count_end(ctx, outcome, code)

    async def retry(self, ctx: ContextState, reason: str) -> bool:
        """Re-enqueue a context after an error ``reason`` if the retry policy allows it (False: it does not)."""
        if not ctx.live or not decide(reason, audio_sent=ctx.chunks_out > 0, attempt=ctx.attempt + 1,
                                      asker="gateway", max_retries=self.settings.max_retries):
            return False
        old = ctx.job_id
        self._jobs.pop(old, None)
        ctx.new_attempt()
        self._jobs[ctx.job_id] = ctx
        metrics.RETRIES.labels(metrics.code_label(reason)).inc()
        log.info("context_retry", session_id=self.id, context_id=ctx.context_id, reason=reason,
                 old_job_id=old, job_id=ctx.job_id, attempt=ctx.attempt)
        try:
            await self._enqueue(ctx)
        except (RedisError, OSError):
            return False
        ctx.trace.enqueued()
        return True

