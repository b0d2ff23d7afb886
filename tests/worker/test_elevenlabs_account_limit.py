"""UPSTREAM_CONCURRENCY holds account-wide: two providers ("workers") share one Redis and one emulator.

Real Redis (the session's private server, or a private one a test stops and restarts), real sockets,
the emulator on a real port, and a real worker process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from emulator.runner import RunningEmulator
from prometheus_client import REGISTRY
from worker.providers.elevenlabs import ElevenLabsProvider
from worker.providers.elevenlabs.context import UpstreamContext
from worker.upstream_permits import AccountLimit

from shared import keys
from shared.errors import UpstreamBusy
from shared.redis_client import create_redis
from shared.redis_server import RedisServer
from tests.support.timing import LOAD_MARGIN_S
from tests.worker.elevenlabs_fixtures import (
    account_of,
    collect,
    emulator,
    held,
    placed,
    provider,
    request,
    until,
)

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 3
# What the permit scripts call inside Redis (never a round trip of their own).
SCRIPT_COMMANDS = {"time", "zremrangebyscore", "zrangebyscore", "zrem", "zscore", "zcard", "zrank", "zadd",
                   "zrange", "incr", "pexpire", "rpush"}


def worker(emu: RunningEmulator, redis_url: str | None,
           **settings: Any) -> contextlib.AbstractAsyncContextManager[ElevenLabsProvider]:
    """A provider as a worker runs it: its own Redis client (None: no account-wide limit)."""
    base: dict[str, Any] = {"upstream_concurrency": LIMIT, "upstream_slot_wait_s": 10.0}
    return provider(emu, redis_url, **{**base, **settings})


class PeakSampler:
    """Samples the emulator's live-context gauge every millisecond (it runs on this event loop)."""

    def __init__(self, emu: RunningEmulator) -> None:
        self.emu = emu
        self.peak = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.emu.stats.contexts_active)
            await asyncio.sleep(0.001)

    async def stop(self) -> int:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.peak


async def _twelve_contexts(workers: list[ElevenLabsProvider]) -> tuple[list[float], list[float]]:
    """Twelve contexts arriving 40 ms apart, alternating workers; returns when each was placed and done.

    Each one ends without an error: none waited past the workers' 10 s slot wait (UpstreamBusy)."""
    placed_at = [0.0] * 12
    done = [0.0] * 12

    async def job(i: int) -> None:
        stream = await workers[i % len(workers)].open_stream(request())
        try:
            await stream.send_text(f"Context {i:02d} speaks. ", flush=True)  # asks for the permit
            await placed(stream, 20.0)
            placed_at[i] = time.monotonic()
            await stream.end_input()
            out = await collect(stream)
        finally:
            await stream.cancel()
        assert out.error is None and out.text() == f"Context {i:02d} speaks. "
        done[i] = time.monotonic()

    tasks = []
    for i in range(12):
        tasks.append(asyncio.create_task(job(i)))
        await asyncio.sleep(0.04)
    await asyncio.gather(*tasks)
    return placed_at, done


def _in_arrival_order(times: list[float], tie_s: float = 0.02) -> bool:
    """Nobody went after an arrival at least LIMIT places behind it.

    Only the first ``free`` tickets may take permits, so tickets fewer than LIMIT apart can be granted
    together (permits freed in the same instant) and race to return; an earlier one is overtaken by
    nothing further back. (Strict order is proven with controlled releases below.)
    """
    n = len(times)
    return all(times[i] <= times[j] + tie_s for i in range(n) for j in range(i + LIMIT, n))


async def test_twelve_contexts_on_two_workers_never_exceed_the_account_limit(redis_url: str) -> None:
    # Each context generates for ~0.3 s: four rounds of three, well inside the 10 s wait bound.
    async with emulator(realtime_factor=4.0, chunk_ms=120) as emu, \
            worker(emu, redis_url) as a, worker(emu, redis_url) as b:
        sampler = PeakSampler(emu)
        with structlog.testing.capture_logs() as logs:
            placed, done = await _twelve_contexts([a, b])
        peak = await sampler.stop()
        assert not [e for e in logs if e["log_level"] in ("warning", "error")]  # e.g. never failed open
        assert peak == LIMIT  # saturated, never over: each worker alone would have allowed 3
        assert _in_arrival_order(placed), placed  # first come, first served across both workers
        assert _in_arrival_order(done), done
        assert emu.stats.contexts_opened == 12 and not emu.stats.close_codes_sent
        r = aioredis.Redis.from_url(redis_url)
        acct = account_of(emu)

        async def drained() -> bool:
            return await r.zcard(keys.upstream_leases(acct)) == 0 and await r.zcard(keys.upstream_waiters(acct)) == 0

        await until(drained)
        await r.aclose()


async def test_waiters_on_two_workers_are_served_strictly_in_arrival_order(redis_url: str) -> None:
    # One permit frees at a time, so only the head of the line may take it: the order is exact.
    async with emulator() as emu, worker(emu, redis_url) as a, worker(emu, redis_url) as b:
        live = [await held(a), await held(b), await held(a)]
        r = aioredis.Redis.from_url(redis_url)
        line = keys.upstream_waiters(account_of(emu))
        order: list[int] = []

        async def wait_in_line(i: int) -> Any:
            stream = await held((b, a)[i % 2])
            order.append(i)
            return stream

        tasks = []
        for i in range(8):
            tasks.append(asyncio.create_task(wait_in_line(i)))

            async def queued(n: int = i + 1) -> bool:
                return await r.zcard(line) == n

            await until(queued)  # in line before the next one arrives
        for k in range(8):
            await live.pop(0).cancel()  # its permit returns at the upstream's final

            async def placed(n: int = k + 1) -> bool:
                return len(order) == n

            await until(placed)
            live.append(tasks[order[-1]].result())
        assert order == list(range(8))
        for s in live:
            await s.cancel()
        await r.aclose()


async def test_without_redis_each_worker_counts_alone(redis_url: str) -> None:
    # The control for the test above: per-process limits let two workers run 2 x 3 at once.
    async with emulator(realtime_factor=4.0, chunk_ms=120) as emu, worker(emu, None) as a, worker(emu, None) as b:
        sampler = PeakSampler(emu)
        await _twelve_contexts([a, b])
        assert await sampler.stop() > LIMIT
        assert a.status()["account"] == {"scope": "worker"}


async def test_excess_gets_upstream_busy_after_the_bounded_wait(redis_url: str) -> None:
    async with emulator(realtime_factor=1.0) as emu, \
            worker(emu, redis_url, upstream_slot_wait_s=0.3) as a, \
            worker(emu, redis_url, upstream_slot_wait_s=0.3) as b:
        holding = [await held(a), await held(a), await held(b)]
        assert b.status()["live_contexts"] == 1  # b's own count is far from its limit...
        t0 = time.monotonic()
        with pytest.raises(UpstreamBusy) as info:
            await held(b)  # ...but the account's is reached
        # Its 0.3 s wait, not the default 10 s.
        assert 0.25 <= time.monotonic() - t0 < 0.3 + LOAD_MARGIN_S
        err = info.value
        assert err.code == "upstream_busy" and err.retryable
        assert err.details["scope"] == "account" and err.details["account_limit"] == LIMIT
        assert "account's 3 concurrent generations" in err.message
        assert b.status()["account"]["account_leases"] == LIMIT

        # A waiter cancelled in line leaves no ticket that would block the others.
        waiter = asyncio.create_task(held(b))
        await asyncio.sleep(0.1)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        r = aioredis.Redis.from_url(redis_url)
        acct = account_of(emu)

        async def no_tickets() -> bool:
            return await r.zcard(keys.upstream_waiters(acct)) == 0

        await until(no_tickets, 1.0 + LOAD_MARGIN_S)
        assert await r.zcard(keys.upstream_leases(acct)) == LIMIT

        # A freed permit goes straight to the next request, on the other worker.
        await holding[0].cancel()  # its permit returns at the upstream's final for the closed context
        t1 = time.monotonic()
        nxt = await held(b)  # the permit came inside b's 0.3 s slot wait, or this raised UpstreamBusy
        print(f"freed permit reused after {time.monotonic() - t1:.3f} s")
        for s in (*holding, nxt):
            await s.cancel()
        await r.aclose()


async def test_a_waiter_is_woken_by_a_release_on_another_worker(redis_url: str) -> None:
    async with emulator() as emu, worker(emu, redis_url, upstream_lease_s=30.0) as a, \
            worker(emu, redis_url, upstream_lease_s=30.0) as b:
        r = aioredis.Redis.from_url(redis_url)
        holding = [await held(a) for _ in range(LIMIT)]
        waiter = asyncio.create_task(held(b))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await r.config_resetstat()
        await holding[0].cancel()
        t0 = time.monotonic()
        stream = await waiter
        handoff = time.monotonic() - t0
        stats = await r.info("commandstats")
        # The release pushed the waiter's ticket onto its worker's wake list (RELEASE's RPUSH)...
        assert stats.get("cmdstat_rpush", {}).get("calls", 0) >= 1, stats
        # ...and the waiter did not wait for its next poll: lease_s / 3 = 10 s after its last one.
        assert handoff < LOAD_MARGIN_S
        for s in (*holding, stream):
            await s.cancel()
        await r.aclose()


CHILD = """
import asyncio, sys
from shared.redis_client import create_redis
from worker.providers.elevenlabs import ElevenLabsProvider
from tests.worker.elevenlabs_fixtures import el_settings, held

async def main() -> None:
    settings = el_settings(upstream_concurrency=3, upstream_lease_s=1.5, upstream_slot_wait_s=5.0)
    p = ElevenLabsProvider(settings, base_url=sys.argv[1], redis=create_redis(sys.argv[2]))
    await p.start()
    streams = [await held(p) for _ in range(3)]
    print("held", len(streams), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_workers_permits_come_back_within_the_lease(redis_url: str) -> None:
    lease_s = 1.5
    async with emulator() as emu:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "VIRTUAL_ENV")}
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, emu.http_url, redis_url, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            assert child.stdout is not None
            line = b""
            while not line.startswith(b"held"):  # the child logs to stdout too
                line = await asyncio.wait_for(child.stdout.readline(), 20)
                assert line, "the child exited"
            assert line.strip() == b"held 3"
            async with worker(emu, redis_url, upstream_lease_s=lease_s) as b:
                waiter = asyncio.create_task(held(b))
                await asyncio.sleep(2 * lease_s)  # the child refreshes its leases: b must keep waiting
                assert not waiter.done()
                child.send_signal(signal.SIGKILL)
                t_kill = time.monotonic()
                stream = await asyncio.wait_for(waiter, 3 * lease_s)
                freed_after = time.monotonic() - t_kill
                # Leases are refreshed every lease_s / 3, so they outlive the kill by 2/3..1 lease.
                assert lease_s / 3 < freed_after < lease_s + 0.3
                await stream.cancel()
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()
        assert child.returncode == -signal.SIGKILL
        assert child.stderr is not None
        err = (await child.stderr.read()).decode(errors="replace")
        for bad in ("was never awaited", "Task exception was never retrieved", "Traceback", "Unclosed"):
            assert bad not in err


async def test_the_free_permit_fast_path_is_one_round_trip(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    async with emulator() as emu, worker(emu, redis_url, upstream_lease_s=60.0) as a:
        await r.config_resetstat()
        stream = await held(a)
        stats = await r.info("commandstats")
        # Redis counts the commands a script runs as calls too: the only one a client sent is the EVALSHA.
        calls = {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}
        assert calls.pop("evalsha") == 1
        assert set(calls) - {"config|resetstat", "info"} <= SCRIPT_COMMANDS
        await stream.cancel()
    await r.aclose()


async def test_taking_a_free_permit_awaits_exactly_one_redis_command(redis_url: str) -> None:
    # Without credit every permit waits for Redis' answer: that answer is one EVALSHA, done by the time
    # acquire returns, and nothing else goes to Redis for it (the release, batched, goes afterwards).
    r = create_redis(redis_url)
    client = create_redis(redis_url)
    account = "test:fastpath"
    acct = AccountLimit(client, account=account, limit=LIMIT, lease_s=60.0, credit=False)
    await acct.start()
    try:
        for i in range(20):
            await r.config_resetstat()
            await acct.acquire(f"k{i}", time.monotonic() + 1.0)
            stats = await r.info("commandstats")
            calls = {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}
            assert calls.pop("evalsha") == 1, calls
            assert set(calls) - {"config|resetstat", "config", "info"} <= SCRIPT_COMMANDS, calls
            assert acct.held(f"k{i}")
            acct.release(f"k{i}")
            await until(lambda: _no_leases(r, account))  # the release is in before the next count
    finally:
        await acct.close()
        await client.aclose()
        await r.aclose()


async def _no_leases(r: aioredis.Redis, account: str) -> bool:
    return await r.zcard(keys.upstream_leases(account)) == 0


async def test_redis_loss_fails_open_to_the_per_worker_limit_then_reconciles() -> None:
    server = RedisServer().start()
    port = server.port
    r = create_redis(server.url)

    def fail_open() -> float:
        return REGISTRY.get_sample_value("tts_upstream_permit_fail_open_total", {"provider": "elevenlabs"}) or 0.0

    try:
        async with emulator(realtime_factor=1.0) as emu, \
                worker(emu, server.url, upstream_concurrency=2, upstream_slot_wait_s=0.3,
                       upstream_lease_s=1.5) as a:
            acct = account_of(emu)
            first = await held(a)
            assert await r.zcard(keys.upstream_leases(acct)) == 1
            before = fail_open()
            with structlog.testing.capture_logs() as logs:
                server.stop()
                second = await held(a)  # admitted on the worker's own count
                assert fail_open() - before == 1
                assert a.status()["account"]["redis"] == "unreachable"
                with pytest.raises(UpstreamBusy) as info:  # which still holds
                    await held(a)
                assert info.value.details["limit"] == "concurrency" and "scope" not in info.value.details
                server = RedisServer(port=port).start()  # empty: the leases are gone with it

                async def reregistered() -> bool:
                    # Both live contexts, the one admitted during the outage too, count again.
                    return await r.zcard(keys.upstream_leases(acct)) == 2

                async def restored() -> bool:
                    return bool(a.status()["account"]["redis"] == "ok")

                await until(reregistered, 3.0 + LOAD_MARGIN_S)
                await until(restored, 3.0 + LOAD_MARGIN_S)
            events = [e["event"] for e in logs]
            assert events.count("upstream_permits_unavailable") == 1  # once per outage, not per request
            assert "upstream_permits_restored" in events
            await first.cancel()
            await second.cancel()

            async def released() -> bool:
                return await r.zcard(keys.upstream_leases(acct)) == 0

            await until(released)
    finally:
        await r.aclose()
        server.stop()


async def test_a_context_moved_to_another_socket_keeps_its_permit(redis_url: str) -> None:
    async with emulator(ttfb_ms=200, realtime_factor=4.0, chunk_ms=120) as emu, \
            worker(emu, redis_url, pool_contexts_per_socket=2, failover_max_per_context=0) as a:
        speaking = await held(a, text="This one speaks and is cut off. ")  # and fails: no failover here
        quiet = await held(a, text="quiet words ")
        assert isinstance(quiet, UpstreamContext) and isinstance(speaking, UpstreamContext)
        assert quiet.socket is speaking.socket
        emu.set_config(None, drop_after_chunks=1, fault_sockets=1)
        await speaking.send_text("", flush=True)
        await speaking.end_input()
        cut = await collect(speaking)
        assert cut.error is not None and cut.chunks
        r = aioredis.Redis.from_url(redis_url)
        leases = keys.upstream_leases(account_of(emu))

        async def only_quiet_left() -> bool:
            # A lease's member ends with the id of the context holding it (instance:tenant:context).
            members = [m.decode() for m in await r.zrange(leases, 0, -1)]
            return len(members) == 1 and members[0].endswith(":" + quiet.id)

        await until(only_quiet_left, 2.0 + LOAD_MARGIN_S)
        await quiet.send_text("and more ", flush=True)
        await quiet.end_input()
        out = await collect(quiet)
        assert out.error is None and out.text() == "quiet words and more " and quiet.attempts == 2
        for s in (speaking, quiet):
            await s.cancel()
        await r.aclose()


async def _resp_command(r: asyncio.StreamReader) -> list[str]:
    """One command as a Redis client sends it (a RESP array of bulk strings)."""
    n = int((await r.readuntil(b"\r\n"))[1:-2])
    args = []
    for _ in range(n):
        size = int((await r.readuntil(b"\r\n"))[1:-2])
        args.append((await r.readexactly(size + 2))[:-2].decode(errors="replace"))
    return args


async def test_a_hung_redis_fails_open_once_per_timeout_not_per_request() -> None:
    # A server that accepts and never answers (a network black hole), unlike a stopped one.
    conns: list[asyncio.StreamWriter] = []
    commands: list[str] = []  # the name of each command the clients sent, in order

    async def swallow(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.append(w)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                commands.append((await _resp_command(r))[0].upper())

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = create_redis(f"redis://127.0.0.1:{port}/0")
    acct = AccountLimit(client, account="test:hung", limit=LIMIT, lease_s=1.5)
    try:
        t0 = time.monotonic()
        await acct.acquire("first", time.monotonic() + 10)  # admitted after the call timeout
        # The 2 s call timeout, not the acquire's 10 s deadline.
        assert 1.5 < time.monotonic() - t0 < 2.0 + LOAD_MARGIN_S
        first_call = list(commands)  # what the client sent for that call (a health-check PING first)
        assert first_call
        await acct.acquire("second", time.monotonic() + 10)  # admitted at once: Redis is known down
        assert acct.held("first") and acct.held("second")
        assert acct.status()["redis"] == "unreachable"
        await acct.close()  # the permits lapse by themselves: shutdown does not wait on a dead Redis
        await asyncio.sleep(0.1)  # anything sent since is read by now (it would have been sent already)
        # Neither the second acquire nor the close called Redis (each call would wait out its 2 s timeout).
        assert commands == first_call
    finally:
        await acct.close()
        await client.aclose()
        for w in conns:
            w.close()
        server.close()
        await server.wait_closed()
