"""The arq job: one context from text in to audio out, ending with exactly one Final or Error."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from redis.exceptions import RedisError

from shared import keys, protocol
from shared.errors import InternalError, ServiceUnavailable, ShuttingDown, TTSError, UnknownVoice, from_code
from shared.logging import get_logger
from shared.metrics import JOB_DURATION, JOBS, UPSTREAM_TTFB, WORKER_ACTIVE_JOBS, model_label, provider_label
from shared.retry import decide
from worker.inputs import JobInput
from worker.jobtrace import JobTrace
from worker.providers.base import SynthesisRequest, SynthesisStream
from worker.state import STATE_KEY, WorkerState

log = get_logger(__name__)


async def synthesize(ctx: dict[str, Any], raw_spec: bytes) -> str:
    """arq entry point; returns the outcome (completed, failed, cancelled, orphaned)."""
    state: WorkerState = ctx[STATE_KEY]
    spec = protocol.decode(raw_spec)
    if not isinstance(spec, protocol.JobSpec):
        log.error("bad_job_spec", type=spec.TYPE)
        return "failed"
    structlog.contextvars.bind_contextvars(job_id=spec.job_id, session_id=spec.session_id,
                                           context_id=spec.context_id)
    state.active_jobs.add(spec.job_id)
    WORKER_ACTIVE_JOBS.set(len(state.active_jobs))
    t0 = time.monotonic()
    run = _JobRun(state, spec)
    try:
        outcome = await run.execute()
    finally:
        state.active_jobs.discard(spec.job_id)
        state.jobs_done += 1
        WORKER_ACTIVE_JOBS.set(len(state.active_jobs))
        structlog.contextvars.unbind_contextvars("job_id", "session_id", "context_id")
    JOBS.labels(provider_label(spec.provider), outcome).inc()
    JOB_DURATION.labels(provider_label(spec.provider)).observe(time.monotonic() - t0)
    return outcome


class _JobRun:
    """State of one job while it runs."""

    def __init__(self, state: WorkerState, spec: protocol.JobSpec) -> None:
        self.state = state
        self.spec = spec
        self.trace = JobTrace(spec)  # stamps ``claimed``: where a traced job's time went (shared/hops.py)
        self.channel = keys.session_channel(spec.session_id)
        self.chunks = 0
        self.audio_bytes = 0
        self.characters = len(spec.text)
        self.bills_upstream = True  # usage metering: False for a provider that pays nobody (the local voice)
        self.cancel_reason: str | None = None
        self.first_text_at: float | None = time.monotonic() if spec.text.strip() else None
        self.ttfb_ms: float | None = None
        self.session_gone = False
        self.frames_lost = False
        self.stream: SynthesisStream | None = None

    async def execute(self) -> str:
        spec, state = self.spec, self.state
        wait_ms = max(0.0, (time.time() - spec.enqueued_at) * 1000) if spec.enqueued_at else 0.0
        started = protocol.JobStarted(spec.job_id, spec.context_id, state.worker_id, wait_ms)
        # The start is announced (its receiver count says whether anyone listens) while the input
        # stream opens (SUBSCRIBE, then LRANGE) and while the job's own text already goes upstream: the
        # announcement's round trip (and an upstream permit's) is off the first-audio path. The
        # publisher is FIFO, so the gateway still reads JobStarted before any audio. The price: a job
        # whose session vanished before the claim has its first text sent (and at once cancelled)
        # upstream instead of never; that is a crashed gateway or a client gone in those milliseconds.
        announce = state.publisher.publish(self.channel, protocol.encode(started))
        opening = asyncio.ensure_future(state.inputs.open(spec.job_id))
        stream: SynthesisStream | None = None
        feeder: asyncio.Task[None] | None = None
        state.listening[spec.job_id] = spec.session_id  # from now on a dead gateway cancels it
        try:
            provider = state.providers.get(spec.provider)
            if provider is None:
                raise UnknownVoice(f"this worker has no provider {spec.provider!r}")
            self.bills_upstream = bool(getattr(provider, "bills_upstream", True))
            stream = await provider.open_stream(SynthesisRequest(
                key=spec.job_id, voice_id=spec.voice_id, model_id=spec.model_id,
                output_format=spec.output_format, voice_settings=spec.voice_settings, options=spec.options,
                tenant=spec.tenant))
            self.stream = stream
            self.trace.inputs_open()
            feeder = asyncio.create_task(self._feed(stream, opening), name=f"feed-{spec.job_id}")
            try:
                receivers = await announce
            except (RedisError, OSError, TimeoutError) as e:
                log.warning("job_start_failed", error=type(e).__name__)
                return "failed"
            if receivers == 0:
                # The session ended before we started: nobody to speak to, nothing to report.
                log.debug("job_orphaned")
                return "orphaned"
            await self._pump(stream)
            if self.cancel_reason is not None:
                return await self._end_cancelled()
            self._publish(protocol.Final(spec.job_id, spec.context_id, self.chunks, self.audio_bytes,
                                         self.characters, self.ttfb_ms, self._billed(), await self.trace.timings(),
                                         self._failovers()))
            await self._summary("completed")
            return "completed"
        except TTSError as e:
            if self.cancel_reason is not None:
                return await self._end_cancelled()
            self._publish_error(e)
            await self._summary("failed", code=e.code)
            return "failed"
        except asyncio.CancelledError:
            # arq cancels running jobs when the drain grace ran out: say so rather than vanish.
            self._publish_error(ShuttingDown("worker shut down before the context finished"))
            await self._summary("failed", code="shutting_down")
            raise
        except Exception as e:
            log.exception("job_crashed")
            self._publish_error(InternalError(f"worker error ({type(e).__name__})"))
            await self._summary("failed", code="internal_error")
            return "failed"
        finally:
            if feeder is not None:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feeder
            state.listening.pop(spec.job_id, None)
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.cancel()
            await self._close_inputs(opening)

    async def _close_inputs(self, opening: asyncio.Future[JobInput]) -> None:
        """Stop opening the input stream if it still is, then close it."""
        if not opening.done():
            opening.cancel()
        await asyncio.gather(opening, return_exceptions=True)
        await self.state.inputs.close(self.spec.job_id)

    async def _pump(self, stream: SynthesisStream) -> None:
        spec = self.spec
        last: asyncio.Future[int] | None = None
        async for chunk in stream:
            if self.cancel_reason is not None:
                break
            if self.frames_lost:
                # A frame never reached Redis: the listener has a gap it cannot play over (its gateway
                # fails the context), so stop paying upstream for audio nobody can use.
                raise ServiceUnavailable("lost the connection to Redis mid-context")
            if last is not None and last.done() and not last.cancelled() and last.exception() is None \
                    and last.result() == 0:
                # Nobody listens any more (gateway gone without a cancel): stop paying upstream.
                self.session_gone = True
                self.cancel_reason = "session_gone"
                break
            if self.chunks == 0 and self.first_text_at is not None:
                self.ttfb_ms = (time.monotonic() - self.first_text_at) * 1000
                UPSTREAM_TTFB.labels(provider_label(spec.provider), model_label(spec.model_id)).observe(self.ttfb_ms / 1000)
            last = self._publish(protocol.Audio(spec.job_id, spec.context_id, self.chunks, chunk.audio,
                                                chunk.alignment))
            self.trace.audio_published(last)
            self.chunks += 1
            self.audio_bytes += len(chunk.audio)

    async def _feed(self, stream: SynthesisStream, opening: asyncio.Future[JobInput]) -> None:
        spec = self.spec
        if spec.text:
            await stream.send_text(spec.text, flush=spec.flush)
            self.trace.text_sent(spec.text)
        if spec.input_closed:
            await stream.end_input()
        try:
            inputs = await opening
        except (RedisError, OSError, TimeoutError) as e:
            # Text sent after the start could not reach us: end the context (retryable before audio)
            # rather than speak part of it and wait for the rest for ever.
            log.warning("job_inputs_unavailable", error=type(e).__name__)
            self.cancel_reason = "service_unavailable"
            await stream.cancel()
            return
        while True:
            msg = await inputs.get()
            if isinstance(msg, protocol.TextInput):
                if self.first_text_at is None and msg.text.strip():
                    self.first_text_at = time.monotonic()
                self.characters += len(msg.text)
                await stream.send_text(msg.text, flush=msg.flush)
                self.trace.text_sent(msg.text)
            elif isinstance(msg, protocol.EndInput):
                await stream.end_input()
            elif isinstance(msg, protocol.Cancel):
                self.cancel_reason = msg.reason
                self.session_gone = self.session_gone or msg.reason == "session_gone"  # no one to tell
                await stream.cancel()
                return

    async def _end_cancelled(self) -> str:
        reason = self.cancel_reason or "cancelled"
        if reason in ("cancelled", "session_gone"):
            # The gateway already ended this context for its client; a Final keeps the contract.
            if not self.session_gone:
                self._publish(protocol.Final(self.spec.job_id, self.spec.context_id, self.chunks,
                                             self.audio_bytes, self.characters, self.ttfb_ms, self._billed(),
                                             await self.trace.timings(),
                                             self._failovers()))
            await self._summary("cancelled")
            return "cancelled"
        # Aborted on purpose (admin reset, gateway deadline): codes the retry policy never re-runs.
        self._publish_error(from_code(reason, f"context aborted: {reason}"))
        await self._summary("cancelled", code=reason)
        return "cancelled"

    def _billed(self) -> int:
        """Characters handed to a paid upstream (every one the provider got, unless it bills nobody),
        plus the ones a failover sent again (the upstream billed them on both sockets)."""
        if not self.bills_upstream:
            return 0
        return self.characters + int(getattr(self.stream, "billed_delta", 0))

    def _failovers(self) -> list[Any]:
        """Where the stream continued on another upstream socket (providers without failover: none)."""
        return list(getattr(self.stream, "failovers", ()))

    def _publish(self, msg: protocol.Message) -> asyncio.Future[int]:
        fut = self.state.publisher.publish(self.channel, protocol.encode(msg))
        fut.add_done_callback(self._published)
        return fut

    def _published(self, fut: asyncio.Future[int]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self.frames_lost = True

    def _publish_error(self, e: TTSError) -> None:
        # The flag is the worker's view of the policy (the gateway decides again with what it knows).
        retry = decide(e.code, audio_sent=self.chunks > 0, attempt=self.spec.attempt + 1, asker="gateway",
                       max_retries=self.state.settings.max_retries)
        self._publish(protocol.Error(self.spec.job_id, self.spec.context_id, e.code, e.message, retry,
                                     self.chunks))

    async def _summary(self, outcome: str, code: str | None = None) -> None:
        log.info("job_summary", outcome=outcome, code=code, provider=self.spec.provider,
                 format=self.spec.output_format, chunks=self.chunks, audio_bytes=self.audio_bytes,
                 characters=self.characters, upstream_ttfb_ms=round(self.ttfb_ms, 2) if self.ttfb_ms else None,
                 attempt=self.spec.attempt)
        # After the log line: with spans on this may wait for the first frame's PUBLISH ack (bounded).
        await self.trace.finish(outcome, **{"tts.provider": self.spec.provider, "tts.error_code": code})
