"""Operator actions on the arq queue: count what waits, and reset it safely while workers run.

arq's job, lock and retry keys are shared by every queue and a running job's id stays in the queue
sorted set until it finishes (DESIGN §1b), so neither "ZCARD" nor "DEL the queue" means what it
seems to. Here:

* depth counts ids in the queue whose job is not locked (arq's in-progress lock, see shared/queue.py), i.e. waiting;
* reset removes, in one atomic script per batch, only ids that are queued and not locked, deletes
  their arq keys and input lists, and leaves a short lock behind, so that a worker between its
  read of the queue and its claim backs off instead of starting a job whose key is gone. Jobs that
  are locked are running: each gets an out-of-band ``Cancel(reason="queue_reset")`` through its
  input list and channel, which the worker acts on at once (worker/inputs.py). Every affected
  session hears ``Error(code="queue_reset", retryable=False)`` on its channel, so the gateway that
  holds it ends the context instead of retrying it.

Only jobs enqueued before the reset began are touched (their score is their enqueue time), so work
that arrives during or after the call is served normally.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from gateway.dispatch import Dispatcher
from shared import keys, protocol
from shared.logging import get_logger
from shared.queue import JOB_KEY_PREFIX, LOCK_KEY_PREFIX, RETRY_KEY_PREFIX, job_key, spec_from_payload

log = get_logger(__name__)

RESET_BATCH = 500
# Long enough to outlast a worker's read→claim round trip, short enough to vanish right after.
RESET_LOCK_MS = 2000
# How long a reset waits for aborted jobs to leave the queue before it reports them still running.
ABORT_WAIT_S = 3.0
# The depth count examines at most this many ids (oldest first: arq claims in score order, so the
# running ones are among them); ids beyond are counted as waiting.
DEPTH_SCAN_MAX = 5000

PURGED_MESSAGE = "an operator reset the queue: this context's job was removed before it started"
ABORTED_MESSAGE = "an operator reset the queue: this context's job was stopped"

# KEYS[1] queue. ARGV: cutoff score, lock ms, job/lock/retry/input key prefixes, then job ids.
# Returns {purged: [id, payload, id, payload, ...], running: [id, ...]}.
_PURGE_LUA = """
local cutoff, lock_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local job_p, lock_p, retry_p, input_p = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local purged, running = {}, {}
for i = 7, #ARGV do
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= cutoff then
    if redis.call('EXISTS', lock_p .. id) == 1 then
      running[#running + 1] = id
    else
      local payload = redis.call('GET', job_p .. id)
      redis.call('ZREM', KEYS[1], id)
      redis.call('DEL', job_p .. id, retry_p .. id, input_p .. id)
      redis.call('SET', lock_p .. id, 'queue_reset', 'PX', lock_ms)
      purged[#purged + 1] = id
      purged[#purged + 1] = payload or ''
    end
  end
end
return {purged, running}
"""

# KEYS[1] queue. ARGV: lock prefix, max ids to examine. Returns {ids in queue, of them locked}.
_DEPTH_LUA = """
local total = redis.call('ZCARD', KEYS[1])
local locked = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  locked = locked + redis.call('EXISTS', ARGV[1] .. id)
end
return {total, locked}
"""


@dataclass(frozen=True, slots=True)
class Depth:
    """The queue at one moment: ids in the sorted set, of them waiting and running."""

    in_queue: int
    waiting: int

    @property
    def running(self) -> int:
        """Ids whose job a worker holds (they stay in the queue until done)."""
        return self.in_queue - self.waiting


@dataclass
class ResetReport:
    """What a reset did; ``to_dict`` is the admin API's answer."""

    queue: str
    purged: int = 0
    aborted: int = 0
    still_running: int = 0
    sessions_notified: int = 0
    undecodable: int = 0
    took_ms: float = 0.0
    sessions: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        """JSON counts (never ids: they would be session identifiers)."""
        return {"queue": self.queue, "purged": self.purged, "aborted": self.aborted,
                "still_running": self.still_running, "sessions_notified": self.sessions_notified,
                "undecodable": self.undecodable, "took_ms": round(self.took_ms, 2)}


class QueueOps:
    """Depth and reset of one Redis's arq queues."""

    def __init__(self, redis: aioredis.Redis, dispatcher: Dispatcher) -> None:
        self._redis = redis
        self._dispatcher = dispatcher
        self._purge = redis.register_script(_PURGE_LUA)
        self._depth = redis.register_script(_DEPTH_LUA)

    async def depth(self, queue: str) -> Depth:
        """How many jobs wait in ``queue`` (and how many of its ids are running)."""
        total, locked = await self._depth(keys=[queue], args=[LOCK_KEY_PREFIX, DEPTH_SCAN_MAX])
        return Depth(in_queue=int(total), waiting=int(total) - int(locked))

    async def reset(self, queue: str) -> ResetReport:
        """Purge waiting jobs and abort running ones that were enqueued before now; tell their sessions."""
        t0 = time.monotonic()
        cutoff_ms = int(time.time() * 1000)
        report = ResetReport(queue)
        running: set[str] = set()
        # A running job that finishes between pages shifts the rest left and may hide a waiting id
        # from the paging; a second pass finds it (and usually only sees running ids again).
        for _ in range(3):
            if not await self._purge_pass(report, queue, cutoff_ms, running):
                break
        if running:
            await self._abort(report, sorted(running))
            await self._wait_aborted(report, queue, running)
        report.sessions_notified = len(report.sessions)
        report.took_ms = (time.monotonic() - t0) * 1000
        return report

    async def _purge_pass(self, report: ResetReport, queue: str, cutoff_ms: int, running: set[str]) -> int:
        """One pass over the queue in pages; returns how many jobs it purged."""
        offset = purged_total = 0
        while True:
            ids = await self._redis.zrangebyscore(queue, "-inf", cutoff_ms, start=offset, num=RESET_BATCH)
            if not ids:
                break
            purged_flat, locked = await self._purge(keys=[queue], args=[
                cutoff_ms, RESET_LOCK_MS, JOB_KEY_PREFIX, LOCK_KEY_PREFIX, RETRY_KEY_PREFIX,
                keys.input_list(""), *ids])
            # Locked ids stay in the queue and purged ones left it: the next page starts after the former.
            offset += len(locked)
            running.update(i.decode() for i in locked)
            purged = [(purged_flat[i].decode(), purged_flat[i + 1]) for i in range(0, len(purged_flat), 2)]
            purged_total += len(purged)
            await self._notify(report, [(job_id, spec_from_payload(payload)) for job_id, payload in purged], PURGED_MESSAGE)
            if len(ids) < RESET_BATCH:
                break
        report.purged += purged_total
        return purged_total

    async def _abort(self, report: ResetReport, job_ids: list[str]) -> None:
        payloads = await self._redis.mget([job_key(j) for j in job_ids])
        cancel = protocol.Cancel(seq=0, reason="queue_reset")
        await self._dispatcher.push_inputs((j, cancel) for j in job_ids)
        report.aborted = len(job_ids)
        # Said by us as well as by the worker: a wedged worker must not leave its listener waiting.
        # (No payload: the job finished meanwhile, and its listener already has its final.)
        await self._notify(report, [(j, spec_from_payload(p)) for j, p in zip(job_ids, payloads) if p], ABORTED_MESSAGE)

    async def _notify(self, report: ResetReport, jobs: list[tuple[str, protocol.JobSpec | None]],
                      message: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        sessions = []
        for job_id, spec in jobs:
            if spec is None:
                report.undecodable += 1
                continue
            err = protocol.Error(job_id, spec.context_id, "queue_reset", message, retryable=False)
            pipe.publish(keys.session_channel(spec.session_id), protocol.encode(err))
            sessions.append(spec.session_id)
        if sessions:
            for session_id, receivers in zip(sessions, await pipe.execute()):
                if receivers:
                    report.sessions.add(session_id)

    async def _wait_aborted(self, report: ResetReport, queue: str, running: set[str]) -> None:
        """Wait (bounded) for aborted jobs to finish, then drop input lists a late cancel recreated."""
        ids = sorted(running)
        deadline = time.monotonic() + ABORT_WAIT_S
        left = ids
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            pipe = self._redis.pipeline(transaction=False)
            for j in left:
                pipe.zscore(queue, j)
            left = [j for j, score in zip(left, await pipe.execute()) if score is not None]
        report.still_running = len(left)
        still = set(left)
        done = [keys.input_list(j) for j in ids if j not in still]
        if done:
            # A job that finished just before our cancel reached it never reads (or deletes) the list.
            await self._redis.delete(*done)

