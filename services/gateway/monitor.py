"""Deadlines the gateway alone can enforce: contexts that never get text, jobs nobody picks up, silent
upstreams, dead workers.

arq never tells a waiting client that a worker died (a SIGKILLed worker's job stays locked until
its timeout), so the gateway watches each running context's worker heartbeat and decides: retry
transparently if no audio went out yet, else fail with ``worker_lost``. It also removes the dead
job from the queue so nothing orphaned is left behind.
"""

from __future__ import annotations

import asyncio
import time

from redis.exceptions import RedisError

from gateway.contexts import AWAITING_TEXT, QUEUED, RUNNING, ContextState
from gateway.services import GatewayServices, LiveSession
from shared.errors import InputTimeout, JobExpired, NoWorkers, ServiceUnavailable, Timeout, WorkerLost
from shared.logging import get_logger

log = get_logger(__name__)
CHECK_INTERVAL_S = 0.2
# A job still queued after this long (and after its key's TTL, JOB_EXPIRES_S: no key lapses sooner)
# has its arq key checked. Not sooner: a key gone before its TTL was consumed, by a worker that ran the
# job while its JobStarted still waited in this session's inbox (a 1,000-stream run: 1,135 completed
# jobs reported as job_expired after 1.1-1.5 s).
EXPIRY_CHECK_AFTER_S = 0.5
_BACKGROUND: set[asyncio.Task[None]] = set()  # strong references to fire-and-forget clean-ups


async def monitor_forever(services: GatewayServices) -> None:
    """Check every live context of this process a few times a second."""
    while True:
        await asyncio.sleep(CHECK_INTERVAL_S)
        try:
            await check_once(services)
        except (RedisError, OSError) as e:
            log.warning("monitor_redis_error", error=type(e).__name__)
        except Exception:
            log.exception("monitor_failed")


async def check_once(services: GatewayServices) -> None:
    """One pass over all contexts."""
    s = services.settings
    now = time.monotonic()
    running: list[tuple[LiveSession, ContextState]] = []
    waiting: list[tuple[LiveSession, ContextState]] = []
    for session in list(services.registry.sessions.values()):
        for ctx in list(session.contexts.values()):
            if not ctx.live:
                continue
            if ctx.state == AWAITING_TEXT:
                # No job exists until the first text (session.py), so no worker can time it out: a
                # context that never speaks would hold its key's concurrency for the session's life.
                if now - ctx.created_at > s.upstream_text_wait_s:
                    session.fail_context(ctx, InputTimeout(
                        f"no text to synthesize within {s.upstream_text_wait_s:g}s of the context's start",
                        waited_s=s.upstream_text_wait_s))
            elif ctx.state == QUEUED and now - ctx.enqueued_at > s.job_start_timeout_s:
                await services.queue.forget(ctx.job_id)
                session.fail_context(ctx, NoWorkers(f"no worker started the job within {s.job_start_timeout_s:g} s"))
            elif ctx.state == QUEUED and now - ctx.enqueued_at > max(EXPIRY_CHECK_AFTER_S, s.job_expires_s):
                waiting.append((session, ctx))
            elif ctx.state == RUNNING:
                if _overdue(ctx, now, s.first_audio_timeout_s, s.inter_chunk_timeout_s):
                    session.fail_context(ctx, Timeout("no audio arrived within the context's deadline"))
                    await session.cancel_job(ctx, "timeout")
                elif ctx.worker_id:
                    running.append((session, ctx))
    await _fail_expired(services, waiting)
    # (session, context, its job and worker as checked): the heartbeat read below is a round trip,
    # during which a context may end or move to a new attempt (a retry before audio clears its worker).
    checked = [(session, ctx, ctx.job_id, ctx.worker_id) for session, ctx in running]
    worker_ids = sorted({wid for *_, wid in checked if wid})
    if not worker_ids:
        return
    alive = await services.queue.live_workers(worker_ids)
    for session, ctx, dead_job, wid in checked:
        if wid in alive or not ctx.live or ctx.job_id != dead_job or ctx.state != RUNNING:
            continue
        log.warning("worker_lost", session_id=session.id, context_id=ctx.context_id, worker_id=wid,
                    job_id=dead_job, audio_chunks=ctx.chunks_out)
        retried = await session.retry(ctx, "worker_lost")
        if not retried:
            session.fail_context(ctx, WorkerLost(f"worker {wid} stopped while speaking this context"))
        await services.queue.forget(dead_job)


async def _fail_expired(services: GatewayServices, waiting: list[tuple[LiveSession, ContextState]]) -> None:
    """Queued contexts whose arq key expired (``JOB_EXPIRES_S``) can never start: say so, by name."""
    if not waiting:
        return
    expired = await services.queue.expired_jobs([ctx.job_id for _, ctx in waiting])
    for session, ctx in waiting:
        # Re-checked after the round trip: a worker that started it meanwhile has announced itself.
        if ctx.job_id in expired and ctx.live and ctx.state == QUEUED:
            log.warning("job_expired", session_id=session.id, context_id=ctx.context_id, job_id=ctx.job_id,
                        queued_s=round(time.monotonic() - ctx.enqueued_at, 3))
            session.fail_context(ctx, JobExpired(
                f"the job expired after {services.settings.job_expires_s:g} s in the queue before a worker "
                "claimed it; nothing was spoken, retry"))
            await services.queue.forget(ctx.job_id)


def fail_inflight(services: GatewayServices) -> None:
    """The subscriber lost Redis: fail every live context and remember its job for :func:`after_reconnect`."""
    # Frames published while the subscriber was down are gone: say so instead of leaving a gap.
    for session in list(services.registry.sessions.values()):
        for ctx in list(session.contexts.values()):
            if ctx.live:
                if ctx.enqueued:
                    services.state.outage_jobs.add(ctx.job_id)
                session.fail_context(ctx, ServiceUnavailable("lost the connection to Redis mid-context"))


def after_reconnect(services: GatewayServices) -> None:
    """Redis is back: the failed contexts' jobs must neither run (again) nor linger, even if an AOF reloaded them."""
    if services.state.outage_jobs:
        task = asyncio.get_running_loop().create_task(_abandon_outage_jobs(services), name="abandon-outage-jobs")
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


async def _abandon_outage_jobs(services: GatewayServices) -> None:
    jobs = sorted(services.state.outage_jobs)
    for attempt in range(5):
        try:
            await services.queue.abandon(jobs)
        except (RedisError, OSError) as e:
            log.warning("outage_jobs_not_abandoned", jobs=len(jobs), error=type(e).__name__, attempt=attempt)
            await asyncio.sleep(0.2 * 2 ** attempt)
            continue
        services.state.outage_jobs.difference_update(jobs)
        log.info("outage_jobs_abandoned", jobs=len(jobs))
        return


def _overdue(ctx: ContextState, now: float, first_audio_s: float, gap_s: float) -> bool:
    if ctx.first_audio_at is None:
        # The upstream owes audio only once the client flushed or ended input.
        return ctx.owed_since is not None and now - max(ctx.owed_since, ctx.started_at or 0) > first_audio_s
    if ctx.last_audio_at is not None and ctx.input_closed:
        return now - ctx.last_audio_at > gap_s
    return False
