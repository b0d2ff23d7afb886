"""The account-wide upstream permit: what it costs, and why waiters are woken rather than polling.

Against a private redis-server (two :class:`AccountLimit` instances on their own clients stand in
for two workers), measures:

* ``fast path``: taking a free permit (one EVALSHA) next to a bare PING on the same client;
* ``handoff``: from a release on worker A to a waiter on worker B holding the permit, with the
  targeted wake (release -> wake list -> BLPOP -> claim) and with short polling with backoff
  (10 ms doubling to 100 ms, what a wake-less design would do; it also cannot keep FIFO order);
* ``idle cost``: Redis commands per second while ``--waiters`` contexts wait and nothing frees.

    .venv/bin/python -m bench.account_permit [--rounds 300] [--waiters 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis
from worker.upstream_permits import AccountLimit

from shared.errors import UpstreamBusy
from shared.logging import configure
from shared.redis_client import create_redis
from shared.redis_server import RedisServer

LIMIT = 3


def _ms(samples: list[float]) -> str:
    s = sorted(samples)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return f"p50 {statistics.median(s) * 1000:7.3f} ms   p99 {p99 * 1000:7.3f} ms"


async def _top_level_calls(r: aioredis.Redis) -> int:
    """Commands clients sent (script-internal calls excluded: only EVALSHA, BLPOP and PING are ours)."""
    stats = await r.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "blpop", "ping"))


async def fast_path(url: str, rounds: int) -> None:
    client = create_redis(url)
    acct = AccountLimit(client, account="bench:fast", limit=LIMIT, lease_s=60.0)
    await acct.start()
    ping: list[float] = []
    take: list[float] = []
    for i in range(rounds):
        t0 = time.perf_counter()
        await client.ping()
        ping.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await acct.acquire(f"k{i}", time.monotonic() + 1)
        take.append(time.perf_counter() - t0)
        acct.release(f"k{i}")
        await asyncio.sleep(0.001)
    await acct.close()
    await client.aclose()
    print(f"fast path   PING          {_ms(ping)}")
    print(f"fast path   acquire       {_ms(take)}   (+{(statistics.median(take) - statistics.median(ping)) * 1000:.3f} ms)")


async def _poll_acquire(acct: AccountLimit, key: str, deadline: float) -> None:
    """Short polling with backoff: try without joining the line, sleep 10 ms doubling to 100 ms."""
    delay = 0.01
    while True:
        try:
            await acct.acquire(key, time.monotonic())  # no wait: no ticket, no FIFO
            return
        except UpstreamBusy:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def handoff(url: str, rounds: int, mode: str) -> None:
    ca, cb = create_redis(url), create_redis(url)
    a = AccountLimit(ca, account=f"bench:{mode}", limit=LIMIT, lease_s=30.0)
    b = AccountLimit(cb, account=f"bench:{mode}", limit=LIMIT, lease_s=30.0)
    await a.start()
    await b.start()
    for i in range(LIMIT):
        await a.acquire(f"h{i}", time.monotonic() + 1)
    take: Callable[[str, float], Coroutine[Any, Any, None]] = b.acquire if mode == "wake" else \
        (lambda key, deadline: _poll_acquire(b, key, deadline))
    gaps: list[float] = []
    for i in range(rounds):
        waiter = asyncio.create_task(take(f"w{i}", time.monotonic() + 10))
        await asyncio.sleep(random.uniform(0.15, 0.35))  # the release comes at any point of a poll cycle
        t0 = time.perf_counter()
        a.release(f"h{i}")
        await waiter
        gaps.append(time.perf_counter() - t0)
        b.release(f"w{i}")  # and A takes the permit back for the next round
        await a.acquire(f"h{i + LIMIT}", time.monotonic() + 5)
    print(f"handoff     {mode:<13} {_ms(gaps)}")
    for acct in (a, b):
        await acct.close()
    await ca.aclose()
    await cb.aclose()


async def idle_cost(url: str, waiters: int, mode: str, seconds: float = 3.0) -> None:
    r = aioredis.Redis.from_url(url)
    ca, cb = create_redis(url), create_redis(url)
    a = AccountLimit(ca, account=f"bench:idle-{mode}", limit=LIMIT, lease_s=5.0)
    b = AccountLimit(cb, account=f"bench:idle-{mode}", limit=LIMIT, lease_s=5.0)
    await a.start()
    await b.start()
    for i in range(LIMIT):
        await a.acquire(f"h{i}", time.monotonic() + 1)
    end = time.monotonic() + seconds + 0.5
    take: Callable[[str, float], Coroutine[Any, Any, None]] = b.acquire if mode == "wake" else \
        (lambda key, deadline: _poll_acquire(b, key, deadline))
    tasks = [asyncio.create_task(take(f"w{i}", end)) for i in range(waiters)]
    await asyncio.sleep(0.5)  # past the backoff ramp
    before = await _top_level_calls(r)
    await asyncio.sleep(seconds)
    rate = (await _top_level_calls(r) - before - 1) / seconds
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"idle cost   {mode:<13} {rate:7.1f} commands/s with {waiters} waiters")
    for acct in (a, b):
        await acct.close()
    await ca.aclose()
    await cb.aclose()
    await r.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--waiters", type=int, default=20)
    args = parser.parse_args()
    configure("error", "console", service="bench")
    with RedisServer() as server:
        await fast_path(server.url, args.rounds)
        await handoff(server.url, min(args.rounds, 50), "wake")
        await handoff(server.url, min(args.rounds, 50), "poll+backoff")
        await idle_cost(server.url, args.waiters, "wake")
        await idle_cost(server.url, args.waiters, "poll+backoff")


if __name__ == "__main__":
    asyncio.run(main())
