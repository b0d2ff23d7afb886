"""arq's Worker, woken at once instead of at its next poll.

arq finds jobs only by polling a sorted set, and refills a freed slot only at the next poll. We keep
a slow poll as a safety net and wake the loop (a) when a gateway publishes on the wake channel after
an enqueue (the message names the job, which is then claimed without listing the queue first) and
(b) when one of our own jobs completes while a job waits for a free slot. Measured on these machines
this takes enqueue→start from ~255 ms p50 (0.5 s poll) to a few ms at ~2 Redis commands/s idle. This
overrides ``Worker.main``, ``start_jobs`` (one claim round trip per poll, see there),
``_release_sem_dec_counter_on_complete``, ``handle_sig_wait_for_completion`` (to announce a drain),
``finish_job`` (fewer commands per job) and ``close``, and starts claimed jobs itself (``_run_claimed``,
one round trip less than arq's ``run_job``), hence arq is pinned.

arq's own loop dies with the first Redis error (a restarted Redis killed every worker): here a failed
poll is logged and retried with backoff, so a worker rides out a Redis restart by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from signal import Signals
from typing import Any

from arq.connections import create_pool
from arq.utils import ms_to_datetime
from arq.worker import Worker
from redis.exceptions import RedisError

from shared import keys
from shared.logging import get_logger
from shared.queue import JOB_KEY_PREFIX, LOCK_KEY_PREFIX, job_keys, now_ms, unpack_payload

log = get_logger(__name__)
# Longest pause between polls while Redis is unreachable.
MAX_POLL_BACKOFF_S = 1.0
# An id found running on another worker is not asked about again for this long (it stays listed
# until it finishes; a rare re-check covers a worker that died with it locked).
ELSEWHERE_RECHECK_S = 2.0
# Per id: -1 locked (running somewhere), -2 expired (its job key is gone: dropped from the queue here,
# never handed to arq, whose "job expired" path logs a failure for a job the gateway already ended),
# 0 not claimable now (gone or scheduled later), else {score, payload} after taking arq's in-progress
# lock. Atomic, like arq's WATCH/MULTI claim it replaces; the payload comes with the claim, so the
# job starts without arq's own read (a MULTI of GET, INCR and EXPIRE of a retry counter).
_CLAIM_SCRIPT = """
local out = {}
for i = 5, #ARGV do
  local lock = ARGV[3] .. ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if redis.call('EXISTS', lock) == 1 then
    out[#out + 1] = -1
  elseif (not score) or tonumber(score) > tonumber(ARGV[1]) then
    out[#out + 1] = 0
  else
    local payload = redis.call('GET', ARGV[4] .. ARGV[i])
    if not payload then
      redis.call('ZREM', KEYS[1], ARGV[i])
      out[#out + 1] = -2
    else
      redis.call('PSETEX', lock, ARGV[2], '1')
      out[#out + 1] = {math.floor(tonumber(score)), payload}
    end
  end
end
return out
"""


class WakeableWorker(Worker):
    """An arq Worker whose poll loop can be woken."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake_event = asyncio.Event()
        self._elsewhere: dict[str, float] = {}  # job id -> when another worker was found running it
        # Ids named by wake-ups since the last loop turn: claimed directly, before (or without) a poll.
        self._hinted: list[bytes] = []
        self._poll_due = True
        self._starved = False  # a listed or hinted job found no free slot
        # Called once when SIGTERM/SIGINT starts the drain (arq stops picking jobs, running ones finish).
        self.on_drain: Callable[[], None] | None = None

    def wake(self, job_id: bytes = b"") -> None:
        """Poll the queue now; with the id of the job just enqueued, claim that one first."""
        if job_id:
            self._hinted.append(job_id)
        else:
            self._poll_due = True
        self._wake_event.set()

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        # A freed slot matters only if a job was left waiting for one: then poll now (bursts would
        # otherwise wait for the timer). Otherwise a completion triggers no poll, which would list
        # every running job again just to find nothing new.
        if self._starved:
            self._starved = False
            self._poll_due = True
            self._wake_event.set()

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        """Tell the world we are draining (heartbeat, /readyz) before arq stops taking jobs."""
        if self.on_drain is not None:
            cb, self.on_drain = self.on_drain, None
            cb()
        super().handle_sig_wait_for_completion(signum)

    async def main(self) -> None:
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        backoff = 0.0
        while True:
            # Cleared before polling so a wake that lands during the poll is not lost.
            self._wake_event.clear()
            hinted, self._hinted = self._hinted, []
            try:
                if hinted and self.allow_pick_jobs and self.job_counter < self.max_jobs:
                    # The wake named the new job: claim it now, without first listing the queue
                    # (one round trip less to first audio). A full poll still follows whenever one
                    # is due (timer, completion, a wake without an id, or no slot for a hint).
                    await self.start_jobs(hinted)
                elif hinted:
                    self._poll_due = self._starved = True
                if self._poll_due or not hinted:
                    self._poll_due = False
                    if self.job_counter >= self.max_jobs:
                        self._starved = True  # arq skips listing when full: refill at a completion
                    await self._poll_iteration()
            except (RedisError, OSError) as e:
                self._poll_due = True
                backoff = min(max(backoff * 2, 0.05), MAX_POLL_BACKOFF_S)
                log.warning("worker_poll_failed", error=type(e).__name__, retry_in_s=backoff)
                await asyncio.sleep(backoff)
                continue
            if backoff:
                log.info("worker_poll_recovered")
                backoff = 0.0
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that races the
            # event being set, and the worker then never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_delay_s):
                    await self._wake_event.wait()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim the new ids of a poll in one round trip; skip the ones already known to run.

        A running job's id stays in the queue until it finishes, so every poll lists every running
        job again, and arq's claim costs three round trips per listed id (WATCH, EXISTS, ZSCORE) even
        when the id is running: O(running jobs) round trips per poll, and a poll per enqueue and per
        completion. Here ids running on this worker are skipped locally, ids found running elsewhere
        are skipped for ``ELSEWHERE_RECHECK_S``, and the rest are checked and locked by one atomic
        script (the same EXISTS/ZSCORE/PSETEX arq's WATCH-MULTI does, so no job starts twice).
        """
        now = time.monotonic()
        listed = [j.decode() for j in job_ids]  # in queue (score) order
        if self._elsewhere:
            present = set(listed)
            for stale in [j for j in self._elsewhere if j not in present]:
                del self._elsewhere[stale]  # finished (left the queue)
        fresh: list[str] = []
        for job_id in listed:
            task = self.tasks.get(job_id)
            if task is not None and not task.done():
                continue
            seen = self._elsewhere.get(job_id)
            if seen is not None and now - seen < ELSEWHERE_RECHECK_S:
                continue
            fresh.append(job_id)
        free = self.max_jobs - self.job_counter
        if len(fresh) > max(free, 0):
            self._starved = True
        if not fresh or free <= 0:
            return
        fresh = fresh[:free]
        claims: list[int | list[Any]] = await self.pool.eval(  # type: ignore[misc]
            _CLAIM_SCRIPT, 1, self.queue_name, str(now_ms()), str(int(self.in_progress_timeout_s * 1000)),
            LOCK_KEY_PREFIX, JOB_KEY_PREFIX, *fresh)
        for job_id, claim in zip(fresh, claims):
            if claim == -1:
                if job_id not in self.tasks:
                    self._elsewhere[job_id] = now
                continue
            if claim == -2:
                log.info("job_expired_unclaimed", job_id=job_id)
                continue
            if not isinstance(claim, list):
                continue  # 0: gone, or re-enqueued for later
            await self.sem.acquire()
            self.job_counter += 1
            t = self.loop.create_task(self._run_claimed(job_id, int(claim[0]), claim[1]))
            t.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            t.add_done_callback(functools.partial(self._forget_task, job_id))
            self.tasks[job_id] = t

    async def _run_claimed(self, job_id: str, score: int, payload: bytes) -> None:
        """arq's ``run_job`` for a job whose payload came with its claim, minus what this worker never uses.

        Kept from arq: the job context (job_id, job_try, enqueue_time, score), ``job_timeout``, the
        job task in ``job_tasks``, the counters its health check reports, and the clean-up of the
        job's keys whatever happened (a drain's cancel included). Left out: results (``keep_result=0``),
        arq-level retries (``max_tries=1``, ``retry_jobs=False``: only the gateway retries) and hence
        the retry counter a second run would be refused by. No job runs twice: its lock outlives the
        job (job_timeout + 10 s), and once a lock lapsed (a SIGKILLed worker) the gateway has
        already removed the job (monitor: worker_lost) or its payload expired (JOB_EXPIRES_S), and a
        job nobody listens to stops before it reaches the upstream (worker/job.py).
        """
        unpacked = unpack_payload(payload)
        function = self.functions.get(unpacked[0]) if unpacked is not None else None
        if unpacked is None or function is None:
            log.error("job_payload_rejected", job_id=job_id, function=unpacked[0] if unpacked else None)
            self.jobs_failed += 1
            await asyncio.shield(self._finish(job_id))
            return
        _name, args, kwargs, enqueue_ms = unpacked
        ctx = {**self.ctx, "job_id": job_id, "job_try": 1, "enqueue_time": ms_to_datetime(enqueue_ms),
               "score": score}
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        self.job_tasks[job_id] = task = self.loop.create_task(function.coroutine(ctx, *args, **kwargs))
        try:
            async with asyncio.timeout(timeout_s):
                await task  # a cancel of this task (the drain ran out) reaches the job, which reports it
        except asyncio.CancelledError:
            self.jobs_failed += 1  # the job told its listener (shutting_down); its keys still go below
        except Exception as e:  # noqa: BLE001 - a crash or the timeout must not skip the clean-up below
            task.cancel()
            self.jobs_failed += 1
            log.warning("job_failed", job_id=job_id, error=type(e).__name__)
        else:
            self.jobs_complete += 1
        finally:
            del self.job_tasks[job_id]
        await asyncio.shield(self._finish(job_id))

    async def _finish(self, job_id: str) -> None:
        """Out of the queue first (no poll can claim it after that), then its keys and its input list."""
        pipe = self.pool.pipeline(transaction=False)
        pipe.zrem(self.queue_name, job_id)
        pipe.delete(*job_keys(job_id)[:3], keys.input_list(job_id))
        await pipe.execute()

    async def finish_job(self, job_id: str, finish: bool, result_data: bytes | None, result_timeout_s: float | None,
                         keep_result_forever: bool, incr_score: int | None, keep_in_progress: float | None) -> None:
        """arq's clean-up of a finished job in two commands instead of five.

        arq wraps it in MULTI/EXEC and also clears the job from its abort set; this worker keeps no
        results and never uses arq's abort (a cancel travels as job input), so what is left is
        ZREM from the queue, then DEL of the job, lock and retry keys. ZREM goes first: once the id
        is out of the queue no poll can claim it, so the keys may go a moment later. Any other case
        (a result to keep, a re-queue) is arq's own.
        """
        if not finish or result_data or keep_in_progress is not None:
            await super().finish_job(job_id, finish, result_data, result_timeout_s, keep_result_forever,
                                     incr_score, keep_in_progress)
            return
        await self._finish(job_id)

    def _forget_task(self, job_id: str, task: asyncio.Task[Any]) -> None:
        # arq drops finished tasks only in _poll_iteration, and under steady load the id-carrying
        # wake-ups start jobs without one: self.tasks then grew by one finished task per job (~1.2 KB,
        # +20 MB per worker in the 3-minute soak). Drop it at completion, and read its outcome, which
        # is what arq's sweep did it for.
        if self.tasks.get(job_id) is task:
            del self.tasks[job_id]
        if not task.cancelled() and task.exception() is not None:
            log.warning("job_bookkeeping_failed", job_id=job_id, error=type(task.exception()).__name__)

    async def close(self) -> None:
        """arq's close, except that Redis being down at shutdown does not skip our own shutdown.

        arq deletes its health-check key first and lets the error escape, so a worker stopped during
        a Redis outage crashed with a traceback before closing its providers and connections. The
        key expires by itself; everything else must still be closed.
        """
        if not self._handle_signals:
            self.handle_sig(Signals.SIGUSR1)
        if not self._pool:
            return
        # Jobs cancelled just above (or by the drain) end in CancelledError; that must not skip
        # the shutdown of providers and connections below.
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        try:
            await self.pool.delete(self.health_check_key)
        except (RedisError, OSError) as e:
            log.warning("worker_health_key_not_deleted", error=type(e).__name__)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None
