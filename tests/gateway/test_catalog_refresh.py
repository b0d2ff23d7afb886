"""Catalog refreshes are shared: concurrent callers of an expired snapshot wait on one scan, not one each."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from gateway.catalog import Catalog

from shared import keys, protocol
from shared.protocol import WorkerHeartbeat

BEAT = WorkerHeartbeat(worker_id="w1", host="h", pid=1, started_at=1.0, at=2.0, providers={"local": {}},
                       voices=[{"voice_id": "v1", "provider": "local"}])


async def _counting_scans(r: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    scans: list[int] = []
    real = r.scan_iter

    def scan_iter(*args: Any, **kwargs: Any) -> Any:
        scans.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(r, "scan_iter", scan_iter)
    return scans


async def test_concurrent_callers_share_one_refresh(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.set(keys.worker_heartbeat("w1"), protocol.encode(BEAT), px=60_000)
        scans = await _counting_scans(r, monkeypatch)
        catalog = Catalog(r)
        snaps = await asyncio.gather(*(catalog.snapshot(max_age=0) for _ in range(50)))
        assert len(scans) == 1
        assert all(s is snaps[0] for s in snaps) and [w.worker_id for w in snaps[0].workers] == ["w1"]
        await catalog.snapshot(max_age=0)  # a refresh once the shared one ended is a new scan
        assert len(scans) == 2
        assert (await catalog.resolve("v1"))[:2] == ("v1", "local")
    finally:
        await r.aclose()


async def test_a_cancelled_caller_leaves_the_shared_refresh_running(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.set(keys.worker_heartbeat("w1"), protocol.encode(BEAT), px=60_000)
        catalog = Catalog(r)
        leaving = asyncio.ensure_future(catalog.snapshot(max_age=0))
        staying = asyncio.ensure_future(catalog.snapshot(max_age=0))
        await asyncio.sleep(0)
        leaving.cancel()
        snap = await staying
        assert leaving.cancelled() and [w.worker_id for w in snap.workers] == ["w1"]
    finally:
        await r.aclose()


async def test_a_failed_refresh_reaches_every_caller_and_the_next_one_retries(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    r = aioredis.Redis.from_url(redis_url)
    try:
        catalog = Catalog(r)

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("redis went away")

        monkeypatch.setattr(r, "mget", broken)
        await r.set(keys.worker_heartbeat("w1"), protocol.encode(BEAT), px=60_000)
        results = await asyncio.gather(*(catalog.snapshot(max_age=0) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(e, ConnectionError) for e in results)
        monkeypatch.undo()
        assert [w.worker_id for w in (await catalog.snapshot(max_age=0)).workers] == ["w1"]
    finally:
        await r.aclose()
