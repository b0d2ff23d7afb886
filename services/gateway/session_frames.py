"""Worker frames in, client events out: the part of a :class:`~gateway.session.SynthesisSession` that
turns what its jobs publish into the events its adapter sends.

Frames arrive on the pub/sub reader and wait, still encoded, in the session's inbox; the inbox is
bounded in frames and bytes (a client that cannot keep up is cut off, never blocks the reader).
``next_event`` decodes them in order, drops frames of jobs the session no longer waits for (stale
audio never leaks into the next context), checks sequence continuity and turns the rest into
events; a phrase-cache hit is replayed as the very events a miss produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from gateway.accounting import count_audio, failover_entries, final_event
from gateway.cache import Chunk, Recorder
from gateway.contexts import RUNNING, ContextState
from gateway.events import AudioEvent, ErrorEvent, Event
from gateway.services import GatewayServices
from shared import metrics, protocol
from shared.errors import ProtocolError, from_code
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)


class SessionFrames:
    """Inbox, routing and replay of a session's frames (see the module docstring)."""

    # The session's state and calls this part uses; SynthesisSession defines them.
    id: str
    services: GatewayServices
    settings: Settings
    closed: bool
    _jobs: dict[str, ContextState]
    _recorders: dict[str, Recorder]
    _end: Callable[..., None]
    cancel_job: Callable[[ContextState, str], Coroutine[Any, Any, None]]
    retry: Callable[[ContextState, str], Awaitable[bool]]

    def _init_frames(self) -> None:
        self._inbox: asyncio.Queue[bytes | Event] = asyncio.Queue()
        self._frames_queued = 0
        # Audio bytes waiting in the inbox (frames and replayed cache hits): memory is what a stuck client costs.
        self._bytes_queued = 0
        self.overflowed = False
        self.on_overflow: Callable[[], None] | None = None

    async def next_event(self) -> Event:
        """The next event for the client, in order; frames of ended jobs are dropped here."""
        while True:
            item = await self._inbox.get()
            if not isinstance(item, bytes):
                if isinstance(item, AudioEvent):  # only replayed cache hits queue audio events
                    self._bytes_queued -= len(item.audio)
                return item
            self._frames_queued -= 1
            self._bytes_queued -= len(item)
            event = await self._route(item)
            if event is not None:
                return event

    def _on_frame(self, data: bytes) -> None:
        # Runs on the pub/sub reader: never block; a client that cannot keep up is cut off. Bytes bound the
        # memory (512 frames of a fast format were 11 MB per stuck session); frames bound the per-item cost.
        if self._frames_queued >= self.settings.session_queue_frames \
                or self._bytes_queued + len(data) > self.settings.session_queue_bytes:
            self._overflow()
            return
        self._frames_queued += 1
        self._bytes_queued += len(data)
        self._inbox.put_nowait(data)

    def _overflow(self) -> None:
        self.overflowed = True
        if not self.closed and self.on_overflow is not None:
            metrics.SLOW_CONSUMERS.inc()
            cb, self.on_overflow = self.on_overflow, None
            cb()

    def _post(self, event: Event) -> None:
        self._inbox.put_nowait(event)

    async def _route(self, data: bytes) -> Event | None:
        try:
            msg = protocol.decode(data)
        except ProtocolError as e:
            log.warning("bad_frame_from_worker", session_id=self.id, error=e.message)
            return None
        ctx = self._jobs.get(getattr(msg, "job_id", ""))
        if ctx is None:
            if isinstance(msg, protocol.JobStarted):
                # A job starting for a context that already ended (failed in a Redis outage and reloaded
                # from its AOF, cancelled while queued): stop it before it pays upstream for nobody.
                with contextlib.suppress(RedisError, OSError):
                    await self.services.queue.push_input(msg.job_id, protocol.Cancel(0, "cancelled"))
            return None  # a cancelled, retried or finished job: its frames must not leak
        if isinstance(msg, protocol.Audio):
            return self._on_audio(ctx, msg)
        if isinstance(msg, protocol.JobStarted):
            ctx.state = RUNNING
            ctx.worker_id = msg.worker_id
            ctx.started_at = time.monotonic()
            metrics.QUEUE_WAIT.observe(max(0.0, ctx.started_at - ctx.enqueued_at))
            return None
        if isinstance(msg, protocol.Final):
            ctx.billed_chars = msg.billed_chars
            ctx.trace.merge_worker(msg.timings)
            ctx.failover = failover_entries(msg.failover)
            recorder = self._recorders.get(ctx.context_id)
            self._end(ctx, "completed")
            if recorder is not None:
                recorder.finish(ctx.chunks_out, ctx.request.fmt.name)
            return final_event(ctx, "completed")
        if isinstance(msg, protocol.Error):
            if await self.retry(ctx, msg.code):
                return None
            err = from_code(msg.code, msg.message)
            self._end(ctx, "failed", err.code)
            return ErrorEvent(ctx.context_id, err)
        return None

    def _on_audio(self, ctx: ContextState, msg: protocol.Audio) -> Event | None:
        if msg.seq != ctx.worker_seq:
            err = ProtocolError(f"audio frames lost between worker and gateway (expected {ctx.worker_seq}, "
                                f"got {msg.seq})")
            self._end(ctx, "failed", err.code)
            asyncio.get_running_loop().create_task(self.cancel_job(ctx, "cancelled"))
            return ErrorEvent(ctx.context_id, err)
        ctx.worker_seq += 1
        seq = count_audio(ctx, msg.audio)
        recorder = self._recorders.get(ctx.context_id)
        if recorder is not None:
            recorder.add(msg.audio, msg.alignment)
        return AudioEvent(ctx.context_id, seq, msg.audio, msg.alignment, ctx.trace if seq == 0 else None)

    def _replay(self, ctx: ContextState, chunks: list[Chunk]) -> None:
        """Serve a phrase-cache hit as the same audio events a miss produced, then a cached final.

        A hit is queued whole (at most CACHE_MAX_ENTRY_BYTES) and counts against the session's byte
        budget: a client that still has more than the budget unread is a slow consumer, or a stuck one
        could queue hit after hit without bound.
        """
        if self._bytes_queued > self.settings.session_queue_bytes:
            self._overflow()
        ctx.cached = True
        for audio, alignment in chunks:
            if not ctx.live:
                return  # the session closed under us
            event = self._on_audio(ctx, protocol.Audio(ctx.job_id, ctx.context_id, ctx.worker_seq, audio,
                                                       alignment))
            if event is not None:
                if isinstance(event, AudioEvent):
                    self._bytes_queued += len(event.audio)
                self._post(event)
        self._end(ctx, "completed")
        self._post(final_event(ctx, "completed"))
