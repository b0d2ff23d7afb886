"""A job whose arq key expired before any worker claimed it ends typed (``job_expired``), never as a traceback."""

from __future__ import annotations

import logging
import time
import uuid

import aiohttp
import pytest
import redis.asyncio as aioredis
from arq.jobs import deserialize_result, serialize_result
from arq.worker import JobExecutionFailed
from emulator.synth import decode_text

from shared import keys
from shared.queue import job_deserializer, job_serializer
from tests.faults.support import assert_no_orphans, report, start_stack, until
from tests.support.procs import Procs
from tests.support.stack import NativeClient
from tests.support.timing import LOAD_MARGIN_S

LONG = "One long sentence holds the only job slot of the only worker for a few seconds. " * 2


async def test_a_job_that_expires_in_the_queue_fails_typed_and_the_worker_drops_it(procs: Procs,
                                                                                    redis_url: str) -> None:
    # One worker with one slot, kept busy; a queued job's key lives 1 s; the start deadline is far away.
    stack = await start_stack(procs, redis_url, emulator={"realtime_factor": 1, "chunk_ms": 100},
                              worker_env={"WORKER_MAX_JOBS": 1},
                              gateway_env={"JOB_EXPIRES_S": 1, "JOB_START_TIMEOUT_S": 30})
    async with aiohttp.ClientSession() as http, NativeClient.connect(stack.base, http) as busy, \
            NativeClient.connect(stack.base, http) as late:
        await busy.send(type="start", context_id="long", format="pcm_16000", text=LONG, end=True)
        await busy.pump_until(lambda c: c.result("long").started is not None, 20)
        t0 = time.monotonic()
        await late.send(type="start", context_id="late", format="pcm_16000", text="Too late.", end=True)
        await late.pump_until(lambda c: c.ended("late"), 15)
        failed_after = time.monotonic() - t0
        await busy.pump_until(lambda c: c.ended("long"), 60)
        # Retrying, as the code invites, works once the slot is free.
        again = await late.speak("again", "On time now.", format="pcm_16000", timeout=20)

    err = late.result("late").error
    assert err is not None and err["code"] == "job_expired", late.result("late").events
    assert not late.result("late").frames
    assert again.final is not None and decode_text(again.audio, 16000) == "On time now.", again.error
    assert busy.result("long").final is not None
    # The key lives 1 s and the monitor checks every 0.2 s (JOB_START_TIMEOUT_S, 30 s here, is the fallback).
    assert 1.0 <= failed_after < 1.0 + 0.2 + LOAD_MARGIN_S, failed_after
    assert len(stack.gateway.events("job_expired")) == 1

    # A worker that finds an expired id in the queue (its key gone, e.g. a gateway that died before it
    # could clean up) drops it quietly: no arq failure record, no traceback, nothing left behind.
    r = aioredis.Redis.from_url(redis_url)
    try:
        ghost = uuid.uuid4().hex
        await r.zadd("tts:queue", {ghost: int(time.time() * 1000)})
        await r.publish(keys.WAKE_CHANNEL, ghost)

        async def dropped() -> bool:
            return await r.zscore("tts:queue", ghost) is None

        await until(dropped, 10, "the expired job dropped from the queue")
    finally:
        await r.aclose()
    worker = stack.workers[0]

    async def logged() -> bool:  # the id leaves the queue a moment before the worker's line is written
        return bool(worker.events("job_expired_unclaimed"))

    await until(logged, 5, "the worker logged the dropped id")
    assert [e["job_id"] for e in worker.events("job_expired_unclaimed")] == [ghost]
    assert "error serializing" not in worker.output() and "job expired" not in worker.output()
    await assert_no_orphans(redis_url)
    report("job_expired", job_expires_s=1, failed_after_s=round(failed_after, 3), code=err["code"],
           retry_succeeded=True)


def test_arq_failure_records_serialize_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    # What arq writes when a claimed job's key is gone: the exception itself as the result.
    caplog.set_level(logging.WARNING, logger="arq")
    data = serialize_result("synthesize", (), {}, 1, 0, False, JobExecutionFailed("job expired"), 0, 1,
                            "x:synthesize", "tts:queue", "x", serializer=job_serializer)
    assert data is not None
    result = deserialize_result(data, deserializer=job_deserializer)
    assert result.result == "JobExecutionFailed: job expired" and result.success is False
    assert not [r for r in caplog.records if "serializ" in r.getMessage()]
