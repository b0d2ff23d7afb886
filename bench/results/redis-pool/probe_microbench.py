"""CPU per Redis round trip with redis-py's stock pool (a read probe on every checkout) and with the
project's pool (shared/redis_client.py), alternating, against a throw-away local redis-server.

    .venv/bin/python bench/results/redis-pool/probe_microbench.py

Prints client CPU (user + system of this process) and wall time per operation for a GET and for the
3-command pipeline a streamed token costs the gateway (RPUSH, EXPIRE, PUBLISH).
"""

from __future__ import annotations

import asyncio
import resource
import time

import redis.asyncio as aioredis
import uvloop

from shared.redis_client import ConnectionPool, create_redis
from shared.redis_server import RedisServer

N = 20_000
ROUNDS = 3


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(client: aioredis.Redis, op: str) -> tuple[float, float]:
    async def get() -> None:
        await client.get("x")

    async def pipe3() -> None:
        p = client.pipeline(transaction=False)
        p.rpush("l", b"x" * 50)
        p.expire("l", 60)
        p.publish("ch", b"y" * 50)
        await p.execute()

    fn = get if op == "get" else pipe3
    for _ in range(500):
        await fn()
    c0, t0 = cpu_s(), time.perf_counter()
    for _ in range(N):
        await fn()
    return (cpu_s() - c0) / N * 1e6, (time.perf_counter() - t0) / N * 1e6


async def main() -> None:
    server = RedisServer().start()
    try:
        ours = create_redis(server.url)
        stock = aioredis.Redis.from_url(server.url)  # same pool class redis-py uses by default
        assert type(ours.connection_pool) is ConnectionPool
        for rnd in range(ROUNDS):
            for op in ("get", "pipe3"):
                for name, client in (("stock", stock), ("ours", ours)):
                    cpu, wall = await measure(client, op)
                    print(f"round {rnd} {op:5} {name:5} {cpu:6.1f} us CPU/op  {wall:6.1f} us wall/op", flush=True)
                    await client.delete("l")
        await ours.aclose()
        await stock.aclose()
    finally:
        server.stop()


if __name__ == "__main__":
    uvloop.run(main())
