"""Assemble a worker: arq settings from Settings, startup/shutdown of the shared state."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import uuid
from typing import Any

from arq.connections import RedisSettings
from arq.worker import func

from shared import keys, loop_health
from shared.audio.avcodec import warm_up as warm_up_codecs
from shared.logging import get_logger
from shared.pubsub import PubSubHub
from shared.queue import JOB_FUNCTION, job_deserializer, job_serializer
from shared.redis_client import create_redis
from shared.settings import Settings
from worker import heartbeat, listeners
from worker.inputs import InputRouter
from worker.job import synthesize
from worker.providers.base import Provider
from worker.providers.registry import build_providers
from worker.publisher import Publisher
from worker.runner import WakeableWorker
from worker.state import STATE_KEY, WorkerState

log = get_logger(__name__)


def new_worker_id() -> str:
    """Unique per process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def build_worker(settings: Settings, providers: dict[str, Provider] | None = None, *,
                 handle_signals: bool = True, worker_id: str | None = None) -> WakeableWorker:
    """An arq worker running the synthesize job with this project's settings.

    arq's streaming-hostile defaults are overridden: many concurrent jobs (each is mostly waiting on
    the upstream), no arq-level retries (only the gateway may retry, and only before first audio),
    no stored results, and SIGTERM lets running jobs finish for the drain grace period.
    """
    wid = worker_id or settings.worker_id or new_worker_id()
    worker: WakeableWorker

    async def startup(ctx: dict[str, Any]) -> None:
        redis = create_redis(settings.redis_url)
        hub = PubSubHub(redis, service="worker")
        publisher = Publisher(redis)
        inputs = InputRouter(redis, hub)
        hub.on_reconnect = inputs.on_reconnect
        provs = providers if providers is not None else build_providers(settings, redis=redis)
        state = WorkerState(settings=settings, worker_id=wid, redis=redis, hub=hub, publisher=publisher,
                            inputs=inputs, providers=provs)
        ctx[STATE_KEY] = state
        # Codec warm-up in a thread, alongside the providers: FFmpeg's first load (~0.5 s) must not stall
        # the event loop inside the first opus/aac/flac request.
        await asyncio.gather(*(p.start() for p in provs.values()), asyncio.to_thread(warm_up_codecs))
        publisher.start()
        await hub.start(keys.WAKE_CHANNEL, handler=worker.wake)  # payload: the new job's id (or empty)
        state.ready = True
        keeper = ctx["liveness"] = heartbeat.liveness_keeper(state)
        ctx["heartbeat_task"] = asyncio.create_task(heartbeat.beat_forever(state, keeper), name="heartbeat")
        keeper.start()
        # Jobs whose gateway died (nobody subscribed to their session) are cancelled within ~0.3 s.
        ctx["listeners_task"] = asyncio.create_task(listeners.watch_forever(state), name="listeners")
        ctx["loop_lag_task"] = asyncio.create_task(loop_health.watch_loop_lag("worker"), name="loop-lag")
        ctx["gc_timer"] = loop_health.GcTimer("worker")
        ctx["gc_timer"].install()
        log.info("worker_started", worker_id=wid, providers=sorted(provs), max_jobs=settings.worker_max_jobs)

    async def shutdown(ctx: dict[str, Any]) -> None:
        state: WorkerState | None = ctx.get(STATE_KEY)
        if "gc_timer" in ctx:
            ctx["gc_timer"].remove()
        for name in ("drain_beat", "heartbeat_task", "listeners_task", "loop_lag_task"):
            task = ctx.get(name)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        keeper = ctx.get("liveness")
        if keeper is not None:
            await asyncio.to_thread(keeper.stop)  # no refresh may follow the clear below
        if state is None:
            return
        await heartbeat.clear(state)
        await state.publisher.close()
        await state.hub.close()
        await asyncio.gather(*(p.close() for p in state.providers.values()), return_exceptions=True)
        await state.redis.aclose()
        log.info("worker_stopped", worker_id=wid, jobs_done=state.jobs_done)

    worker = WakeableWorker(
        functions=[func(synthesize, name=JOB_FUNCTION)],
        queue_name=settings.queue_name,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        on_startup=startup,
        on_shutdown=shutdown,
        max_jobs=settings.worker_max_jobs,
        job_timeout=3600,
        keep_result=0,
        max_tries=1,
        retry_jobs=False,
        poll_delay=settings.worker_poll_s,
        handle_signals=handle_signals,
        # arq takes whole seconds (round up, never truncate 0.5 s to "cancel at once"); 0 cancels at once.
        job_completion_wait=math.ceil(settings.drain_grace_s) if handle_signals else 0,
        health_check_interval=5,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        log_results=False,
    )
    worker.on_drain = lambda: _start_drain(worker)
    return worker


def _start_drain(worker: WakeableWorker) -> None:
    """SIGTERM: advertise ``draining`` at once so gateways' /readyz and catalogue stop counting us."""
    state: WorkerState | None = worker.ctx.get(STATE_KEY)
    if state is None:
        return
    state.draining = True
    log.info("worker_draining", worker_id=state.worker_id, active_jobs=len(state.active_jobs),
             grace_s=state.settings.drain_grace_s)
    worker.ctx["drain_beat"] = asyncio.get_running_loop().create_task(heartbeat.beat_once(state),
                                                                     name="drain-heartbeat")
