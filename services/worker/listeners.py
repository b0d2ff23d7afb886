"""Stop jobs whose listener is gone: a gateway that died (SIGKILL, OOM) never sends their cancel.

Each session's gateway holds a subscription to the session's channel for as long as the session
lives (it subscribes before it enqueues), and Redis drops a dead process's subscriptions the moment
the kernel closes its socket. So one ``PUBSUB NUMSUB`` over the channels of this worker's running
jobs, a few times a second, tells which jobs nobody listens to any more; those are cancelled like a
client cancel (their upstream context closes, their account permit returns, their keys are removed
when the job ends). This also covers jobs that are not producing audio (input still open, nothing
flushed), which the publish-returned-zero check in the job cannot see.

Cheaper than a gateway-liveness key per job: no field in the job, no extra write per job, one
command per worker per pass whatever the number of jobs, and no TTL to wait out. The limit: a gateway
host that vanishes without closing its TCP connections (power loss, partition) is seen only when
Redis' ``tcp-keepalive`` gives up on the connection.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError

from shared import keys
from shared.logging import get_logger
from worker.state import WorkerState

log = get_logger(__name__)
# A pass every 250 ms: a dead gateway's jobs stop within ~0.3 s of Redis noticing (promised: 2 s).
CHECK_INTERVAL_S = 0.25


async def watch_forever(state: WorkerState, interval_s: float = CHECK_INTERVAL_S) -> None:
    """Cancel orphaned jobs until cancelled; Redis errors skip a pass (the job notices those itself)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await check_once(state)
        except (RedisError, OSError) as e:
            log.debug("listener_check_failed", error=type(e).__name__)


async def check_once(state: WorkerState) -> list[str]:
    """One pass; returns the ids of the jobs it cancelled."""
    jobs = dict(state.listening)
    if not jobs:
        return []
    channels = sorted({keys.session_channel(sid) for sid in jobs.values()})
    counts = await state.redis.pubsub_numsub(*channels)
    silent = {_text(ch) for ch, n in counts if int(n) == 0}
    cancelled = []
    for job_id, session_id in jobs.items():
        # Still running (it may have ended during the round trip) and nobody subscribed.
        if keys.session_channel(session_id) in silent and state.listening.get(job_id) == session_id:
            log.info("job_listener_gone", job_id=job_id, session_id=session_id)
            state.inputs.cancel_local(job_id, "session_gone")
            cancelled.append(job_id)
    return cancelled


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
