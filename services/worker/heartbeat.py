"""Worker heartbeat: a key with a short TTL that gateways watch to tell a dead worker from a slow one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

from redis.exceptions import RedisError

from shared import keys, protocol
from shared.logging import get_logger
from shared.protocol import WorkerHeartbeat
from worker.liveness import LivenessKeeper
from worker.state import WorkerState

log = get_logger(__name__)


def heartbeat(state: WorkerState) -> WorkerHeartbeat:
    """What a worker tells the world about itself every beat."""
    return WorkerHeartbeat(
        worker_id=state.worker_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=state.started_at,
        at=time.time(),
        active_jobs=len(state.active_jobs),
        max_jobs=state.settings.worker_max_jobs,
        jobs_done=state.jobs_done,
        draining=state.draining,
        providers={name: p.status() for name, p in state.providers.items()},
        voices=[{"voice_id": v.voice_id, "name": v.name, "provider": v.provider, "language": v.language,
                 "description": v.description, "default_model": v.default_model,
                 "sample_rate": v.sample_rate, "labels": v.labels}
                for p in state.providers.values() for v in p.voices()],
    )


async def beat_forever(state: WorkerState, keeper: LivenessKeeper | None = None) -> None:
    """Refresh the heartbeat key until cancelled; survive Redis outages. ``keeper`` (worker/liveness.py)
    is told each time the loop got here, so it extends the key only while the loop is merely busy."""
    try:
        while True:
            if keeper is not None:
                keeper.loop_alive()
            await beat_once(state)
            await asyncio.sleep(state.settings.heartbeat_interval_s)
    finally:
        if keeper is not None:
            keeper.halt()  # no beat from this loop any more: nothing may keep the key alive for it


def liveness_keeper(state: WorkerState) -> LivenessKeeper:
    """The thread that keeps ``state``'s heartbeat key alive through a busy loop (not started)."""
    s = state.settings
    return LivenessKeeper(s.redis_url, keys.worker_heartbeat(state.worker_id), ttl_s=s.heartbeat_ttl_s,
                          interval_s=s.heartbeat_interval_s, stall_limit_s=s.heartbeat_stall_limit_s)


async def beat_once(state: WorkerState) -> None:
    """Write the heartbeat now (also on entering drain, so gateways stop counting us at once)."""
    ttl_ms = int(state.settings.heartbeat_ttl_s * 1000)
    try:
        await state.redis.set(keys.worker_heartbeat(state.worker_id), protocol.encode(heartbeat(state)), px=ttl_ms)
    except (RedisError, OSError) as e:
        log.warning("heartbeat_failed", error=type(e).__name__)


async def clear(state: WorkerState) -> None:
    """Remove the heartbeat at clean shutdown so gateways stop counting this worker at once."""
    with contextlib.suppress(RedisError, OSError):
        await state.redis.delete(keys.worker_heartbeat(state.worker_id))
