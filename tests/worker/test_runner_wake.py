"""Woken workers (worker/runner.py) run every job exactly once: none twice, none left behind.

Two real workers in this process (tests/support/stack.py) share one queue on a real Redis; jobs are
enqueued the gateway's way (gateway/dispatch.py: job key, queue entry and wake PUBLISH naming the job),
all at once, so both workers are woken for every job and race to claim it with the claim script. The
safety-net poll is set far beyond the test's deadline: every job is found through a wake (or the
refill poll after a completion when a worker was full), never through the timer.

The workers have no provider, so each job announces itself (JobStarted, naming its worker) and ends
at once with an Error (unknown voice): what a job run leaves on its session's channel is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter

import redis.asyncio as aioredis
from gateway.dispatch import Dispatcher
from redis.asyncio.client import PubSub
from worker.runner import WakeableWorker
from worker.state import STATE_KEY

from shared import keys, protocol
from shared.queue import JOB_KEY_PREFIX
from shared.redis_client import create_redis
from tests.conftest import fast_settings
from tests.support.stack import running_worker

JOBS = 300
SESSION = "wake-test"
DEADLINE_S = 30.0  # generous: a job found only by the safety-net poll would wait WORKER_POLL_S


async def _enqueue_all(redis: aioredis.Redis, queue_name: str) -> list[str]:
    dispatcher = Dispatcher(redis, queue_name)
    ids = [uuid.uuid4().hex for _ in range(JOBS)]
    await asyncio.gather(*(dispatcher.enqueue(protocol.JobSpec(
        job_id, SESSION, f"c{i}", "none", "v", "m", "pcm_16000", text="Hello.", input_closed=True,
        enqueued_at=time.time())) for i, job_id in enumerate(ids)))
    return ids


class _Channel:
    """What the jobs published on the session's channel: JobStarted and ends, per job id."""

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self.started: list[protocol.JobStarted] = []
        self.ended: Counter[str] = Counter()

    async def read(self, timeout: float) -> bool:
        """Take one message; False when none came within ``timeout``."""
        msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        if msg is None:
            return False
        decoded = protocol.decode(msg["data"])
        if isinstance(decoded, protocol.JobStarted):
            self.started.append(decoded)
        elif isinstance(decoded, (protocol.Error, protocol.Final)):
            self.ended[decoded.job_id] += 1
        return True


async def _idle(*workers: WakeableWorker) -> None:
    while any(w.job_counter for w in workers):
        await asyncio.sleep(0.01)


async def test_jobs_woken_on_two_workers_each_run_exactly_once(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=(), worker_poll_s=3600.0, worker_max_jobs=50)
    redis = create_redis(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.session_channel(SESSION))
    channel = _Channel(pubsub)
    try:
        async with running_worker(settings, providers={}, worker_id="w1") as w1, \
                running_worker(settings, providers={}, worker_id="w2") as w2:
            ids = await _enqueue_all(redis, settings.queue_name)
            with contextlib.suppress(TimeoutError):  # the asserts below say what went missing
                async with asyncio.timeout(DEADLINE_S):
                    while len(channel.ended) < JOBS:
                        await channel.read(timeout=1.0)
                    await _idle(w1, w2)
            runs = {w.ctx[STATE_KEY].worker_id: w.ctx[STATE_KEY].jobs_done for w in (w1, w2)}
        # Workers stopped (their publishers flushed): anything a second run published is here now.
        while await channel.read(timeout=0.2):
            pass
        left = await redis.zcard(settings.queue_name)
        job_keys = [k async for k in redis.scan_iter(match=JOB_KEY_PREFIX + "*")]
    finally:
        await pubsub.aclose()
        await redis.aclose()

    started = Counter(s.job_id for s in channel.started)
    assert set(started) == set(ids), f"never started: {len(set(ids) - set(started))}"
    twice = sorted(j for j, n in started.items() if n > 1)
    assert not twice, f"{len(twice)} jobs started more than once, e.g. {twice[:3]}"
    assert all(channel.ended[j] == 1 for j in ids), "a job ended more or less than once"
    assert sum(runs.values()) == JOBS, runs  # the workers' own count of job runs agrees
    assert left == 0 and not job_keys  # each run took its job out of the queue and deleted its keys
    assert set(runs) == {"w1", "w2"}
