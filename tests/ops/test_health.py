"""Probe semantics on real processes: liveness never depends on Redis; readiness means "can serve now"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from shared.redis_server import RedisServer
from tests.support.procs import Proc, Procs


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis this test may stop and restart (the suite's shared one must stay up)."""
    server = RedisServer().start()
    yield server
    server.stop()


async def _probe(http: aiohttp.ClientSession, proc: Proc, path: str) -> tuple[int, dict[str, Any]]:
    async with http.get(proc.base_url + path, timeout=aiohttp.ClientTimeout(total=3)) as resp:
        return resp.status, await resp.json()


async def _until_status(http: aiohttp.ClientSession, proc: Proc, status: int, body_status: str,
                        timeout: float = 15.0) -> float:
    t0 = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            got, body = await _probe(http, proc, "/readyz")
            if got == status and body["status"] == body_status:
                return time.monotonic() - t0
            await asyncio.sleep(0.05)


async def test_readiness_follows_model_load_workers_and_redis(own_redis: RedisServer, procs: Procs) -> None:
    url = own_redis.url
    worker = procs.worker(url, HEARTBEAT_INTERVAL_S=0.2, HEARTBEAT_TTL_S=0.8)
    gw = procs.gateway(url)
    seen: list[str] = []
    async with aiohttp.ClientSession() as http:
        # Worker: its port answers at once, "starting" until the model is loaded, then ready.
        async with asyncio.timeout(60):
            while True:
                try:
                    status, body = await _probe(http, worker, "/readyz")
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
                    continue
                seen.append(body["status"])
                if status == 200:
                    break
                await asyncio.sleep(0.02)
        assert seen[0] == "starting" and seen[-1] == "ready", seen
        assert set(seen) == {"starting", "ready"}, seen
        assert body["providers"]["local"]["model_loaded"] is True
        await gw.wait_http("/readyz")

        # Redis down: both turn unready, neither turns unhealthy (a restart would not help).
        own_redis.stop()
        t_gw = await _until_status(http, gw, 503, "redis_unreachable")
        t_w = await _until_status(http, worker, 503, "redis_unreachable")
        for proc in (gw, worker):
            assert (await _probe(http, proc, "/healthz"))[0] == 200
        # Redis back on the same port: both ready again by themselves.
        own_redis.start()
        t_back = await _until_status(http, worker, 200, "ready", timeout=20)
        await _until_status(http, gw, 200, "ready", timeout=20)
    # Stopped while Redis is down (a rollout during an outage): both still exit cleanly.
    own_redis.stop()
    await asyncio.sleep(0.5)
    t_stop = time.monotonic()
    gw.terminate()
    worker.terminate()
    assert await gw.wait_exit(15) == 0
    assert await worker.wait_exit(15) == 0
    print(f"unready after Redis loss: gateway {t_gw:.2f}s, worker {t_w:.2f}s; worker ready again "
          f"{t_back:.2f}s after Redis returned; both exited {time.monotonic() - t_stop:.2f}s after SIGTERM "
          f"with Redis down")
