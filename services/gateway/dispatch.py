"""The gateway's side of the queue: enqueue jobs, deliver input to them, and clean up after them."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis

from gateway.input_ttl import InputTtlRecord
from shared import keys, protocol
from shared.queue import JOB_EXPIRES_MS, job_key, job_keys, job_payload

# An input list outlives any sane utterance but never leaks for ever.
INPUT_TTL_S = 3600
# A Cancel left for a job that may still run on a worker whose subscriber is not back yet (workers
# reconnect with a backoff of at most 1 s); a job that already ended never reads it, so keep it short.
CANCEL_TTL_S = 3


class Dispatcher:
    """Writes jobs and their input to Redis."""

    def __init__(self, redis: aioredis.Redis, queue_name: str, job_expires_s: float = JOB_EXPIRES_MS / 1000,
                 input_ttl_s: int = INPUT_TTL_S) -> None:
        self._redis = redis
        self.queue_name = queue_name
        self.job_expires_ms = max(1, int(job_expires_s * 1000))
        self._input_ttl = InputTtlRecord(input_ttl_s)

    async def enqueue(self, spec: protocol.JobSpec) -> None:
        """Enqueue the job and wake the workers, in one round trip.

        Writes the same job key and queue entry as ``ArqRedis.enqueue_job`` (via arq's own
        ``serialize_job``) but skips its WATCH round trips: job ids are fresh uuids, so the
        duplicate check they buy can never fire. The wake PUBLISH rides in the same pipeline.

        No MULTI: one connection runs the three commands in order, so a worker that sees the id in
        the queue (by a poll or the wake) finds its job key already written. If the connection dies
        half way, the caller fails the context; a job key left without its queue entry expires.
        """
        score = int(spec.enqueued_at * 1000)
        pipe = self._redis.pipeline(transaction=False)
        pipe.psetex(job_key(spec.job_id), self.job_expires_ms, job_payload(spec))
        pipe.zadd(self.queue_name, {spec.job_id: score})
        pipe.publish(keys.WAKE_CHANNEL, spec.job_id)  # workers claim the named job without a poll
        await pipe.execute()

    async def push_input(self, job_id: str, msg: protocol.Message) -> None:
        """Append to the job's input list, then publish it live (see worker/inputs.py)."""
        await self.push_inputs([(job_id, msg)])

    async def push_inputs(self, items: Iterable[tuple[str, protocol.Message]]) -> None:
        """:meth:`push_input` for several jobs in one round trip (an operator cancelling every running job).

        No MULTI (it cost two of the five commands per input): the worker subscribes and then reads
        the list, and this connection runs RPUSH before PUBLISH, so in every interleaving the worker
        finds the message in the list, on the channel, or both (seq drops the duplicate). If the
        connection dies between the two, the caller fails the context, so nobody waits for it.

        EXPIRE rides along only when the list's TTL is due (a job's first push here, then every half
        TTL; see gateway/input_ttl.py). A push that skipped it but created the list (RPUSH answers 1:
        the worker had deleted it at the job's end and a late input came) sets it in a second round
        trip, so even such a list never outlives the TTL.
        """
        pipe = self._redis.pipeline(transaction=False)
        pushed: list[tuple[str, bool]] = []
        for job_id, msg in items:
            data = protocol.encode(msg)
            ttl_due = self._input_ttl.due(job_id)
            pipe.rpush(keys.input_list(job_id), data)
            if ttl_due:
                pipe.expire(keys.input_list(job_id), self._input_ttl.ttl_s)
            pipe.publish(keys.input_channel(job_id), data)
            pushed.append((job_id, ttl_due))
        try:
            replies = await pipe.execute()
        except BaseException:
            for job_id, _ in pushed:
                self._input_ttl.forget(job_id)  # the EXPIRE may not have run: the next push sends it
            raise
        await self._expire_recreated(pushed, replies)

    async def _expire_recreated(self, pushed: list[tuple[str, bool]], replies: list[object]) -> None:
        """Set the TTL of lists a push created without sending EXPIRE (see :meth:`push_inputs`)."""
        recreated, i = [], 0
        for job_id, ttl_due in pushed:
            if replies[i] == 1 and not ttl_due:
                recreated.append(job_id)
            i += 3 if ttl_due else 2
        if recreated:
            pipe = self._redis.pipeline(transaction=False)
            for job_id in recreated:
                pipe.expire(keys.input_list(job_id), self._input_ttl.ttl_s)
            await pipe.execute()

    async def forget(self, job_id: str) -> None:
        """Remove every trace of a job (queue entry, arq keys, input list) after its worker died."""
        self._input_ttl.forget(job_id)  # a later push recreates the list: it must set the TTL at once
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(self.queue_name, job_id)
        pipe.delete(*job_keys(job_id), keys.input_list(job_id))
        await pipe.execute()

    async def abandon(self, job_ids: list[str]) -> None:
        """Remove these jobs from Redis and cancel any that still runs, in one MULTI (after a Redis outage).

        Like :meth:`forget`, plus a Cancel: published live, and left alone in the job's input list for
        ``CANCEL_TTL_S`` so a worker that resubscribes only after this still reads it at its replay.
        """
        if not job_ids:
            return
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(self.queue_name, *job_ids)
        for job_id in job_ids:
            self._input_ttl.forget(job_id)
            data = protocol.encode(protocol.Cancel(0, "cancelled"))
            pipe.delete(*job_keys(job_id), keys.input_list(job_id))
            pipe.rpush(keys.input_list(job_id), data)
            pipe.expire(keys.input_list(job_id), CANCEL_TTL_S)
            pipe.publish(keys.input_channel(job_id), data)
        await pipe.execute()

    async def expired_jobs(self, job_ids: list[str]) -> set[str]:
        """Which of these queued jobs lost their arq key (expired): no worker can ever start them."""
        if not job_ids:
            return set()
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.exists(job_key(job_id))
        found = await pipe.execute()
        return {job_id for job_id, n in zip(job_ids, found) if not n}

    async def live_workers(self, worker_ids: list[str]) -> set[str]:
        """Which of these workers still have a heartbeat."""
        if not worker_ids:
            return set()
        pipe = self._redis.pipeline(transaction=False)
        for wid in worker_ids:
            pipe.exists(keys.worker_heartbeat(wid))
        found = await pipe.execute()
        return {wid for wid, n in zip(worker_ids, found) if n}
