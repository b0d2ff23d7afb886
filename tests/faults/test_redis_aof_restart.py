"""Redis with an append-only file, SIGKILLed under load and restarted: what it reloads must not haunt anyone.

An AOF brings back the queue, arq's job keys and in-progress locks, input lists and account permits
as they were up to a second before the crash. Every context in flight was failed by its gateway
(``service_unavailable``) when its subscriber dropped, so every job from before the crash is dead:
none may run again, no reloaded lock or permit may hold up new work, and new sessions must succeed
within 5 s of Redis being back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from shared.redis_server import RedisServer, free_port
from tests.faults.support import assert_no_orphans, leftovers, report, start_stack, until
from tests.faults.test_redis_restart import _first_success
from tests.support.procs import Procs
from tests.support.stack import NativeClient

SPEECH = "A long sentence is still being spoken when the queue underneath it crashes. " * 3
DOWN_S = 2.0


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    """A private redis-server with ``appendonly yes`` on a fixed port, its AOF kept across restarts."""
    server = RedisServer(port=free_port(), appendonly=True).start()
    yield server
    server.stop()
    server.cleanup()


async def test_redis_aof_restart_under_load_runs_nothing_twice_and_blocks_nothing(
        procs: Procs, aof_redis: RedisServer) -> None:
    rs = aof_redis
    # Two slots per worker and as many account permits as running jobs: a reloaded lock or permit
    # that nobody clears would hold up the new sessions below.
    stack = await start_stack(procs, rs.url, workers=2, gateways=2, emulator={"realtime_factor": 2, "chunk_ms": 100},
                              UPSTREAM_CONCURRENCY=4, worker_env={"WORKER_MAX_JOBS": 2})
    async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as clients:
        sessions = [await clients.enter_async_context(NativeClient.connect(g.base_url, http))
                    for g in stack.gateways for _ in range(3)]
        for i, c in enumerate(sessions):
            if i % 3 == 2:  # input open, nothing flushed: runs upstream without producing audio
                await c.send(type="start", context_id="s", format="pcm_16000", text="Quiet words ")
            else:
                await c.send(type="start", context_id="s", format="pcm_16000", text=SPEECH, flush=True)
        started = [c for c in sessions if c.result("s").started is not None]
        await until(lambda: _started(sessions, 4), 20, "four jobs running (two more queued)")
        # The AOF is fsynced every second, but Redis postpones that fsync up to 2 s while the previous one
        # still runs (a loaded CI disk): wait out both so the crash finds the load on disk.
        await asyncio.sleep(3.5)
        r = aioredis.Redis.from_url(rs.url)
        try:
            queued_before = await r.zcard("tts:queue")
        finally:
            await r.aclose()
        opened_before = (await stack.emu_stats())["contexts_opened"]

        t_kill = time.monotonic()
        await asyncio.to_thread(rs.kill)
        for c in sessions:
            await c.pump_until(lambda c: c.ended("s"), 10)
        await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - t_kill)))
        await asyncio.to_thread(rs.start)
        t_up = time.monotonic()
        reloaded = await leftovers(rs.url)
        recovered = await asyncio.gather(*(_first_success(g.base_url, http, t_up) for g in stack.gateways))
        # The sessions that lived through it work again as well.
        for c in sessions:
            res = await c.speak("again", "Still here.", format="pcm_16000", timeout=15)
            assert res.final is not None, res.error

    started = [c for c in sessions if c.result("s").started is not None]
    for c in sessions:
        err = c.result("s").error
        assert err is not None and err["code"] == "service_unavailable", c.result("s").events[-2:]
    assert queued_before == 6 and reloaded.get("tts:queue") == 6, (queued_before, reloaded)
    assert max(recovered) < 5.0, recovered
    # Nothing from before the crash ran again: one job summary per job at most, and every pre-crash
    # job that started after the restart was stopped before any audio.
    pre_crash = {e["job_id"] for g in stack.gateways for e in g.events("context_summary")
                 if e.get("code") == "service_unavailable"}
    assert len(pre_crash) == 6
    summaries = [e for w in stack.workers for e in w.events("job_summary")]
    runs = collections.Counter(e["job_id"] for e in summaries)
    assert not [j for j, n in runs.items() if n > 1], runs
    late = [e for e in summaries if e["job_id"] in pre_crash and e.get("outcome") != "failed"]
    assert all(e["chunks"] == 0 for e in late), late
    await assert_no_orphans(rs.url, timeout=20)
    r = aioredis.Redis.from_url(rs.url)
    try:
        async def no_permits() -> bool:
            leases = [k async for k in r.scan_iter(match="tts:upstream:*:leases")]
            return sum([await r.zcard(k) for k in leases]) == 0

        # Releases settle off the job's path; a reloaded permit nobody refreshes lapses within 5 s.
        await until(no_permits, 10, "every account permit released")
    finally:
        await r.aclose()
    opened_after = (await stack.emu_stats())["contexts_opened"] - opened_before
    report("redis_aof_restart", redis_down_s=round(t_up - t_kill, 2), jobs_in_flight=6, queue_reloaded=reloaded,
           new_session_ok_after_redis_back_s=[round(x, 3) for x in recovered],
           pre_crash_jobs_started_after_restart=len(late), upstream_contexts_opened_after_crash=opened_after,
           started_before_crash=len(started))


async def _started(sessions: list[NativeClient], n: int) -> bool:
    for c in sessions:
        with contextlib.suppress(TimeoutError):
            await c.pump_until(lambda c: c.result("s").started is not None, 0.02)
    return sum(c.result("s").started is not None for c in sessions) >= n
