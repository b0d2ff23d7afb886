"""A busy worker is not a dead one: its heartbeat outlives a blocked event loop up to the stall limit.

The worker runs in this process, on this test's event loop, so ``time.sleep`` blocks it for real
(what a burst of jobs does to a worker); the heartbeat key is read meanwhile with a blocking client,
as a gateway on another machine would see it.
"""

from __future__ import annotations

import asyncio
import time

import redis
import redis.asyncio

from shared import keys
from tests.conftest import fast_settings
from tests.support.stack import running_worker

TTL_S = 0.8


async def _beating(url: str, key: str) -> None:
    """Wait for the worker's first heartbeat (its task may not have run yet when the worker is up)."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        for _ in range(200):
            if await client.exists(key):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"no heartbeat at {key}")
    finally:
        await client.aclose()


def _alive_after_blocking(url: str, key: str, block_s: float) -> bool:
    """Block the event loop for ``block_s`` and say whether the key still exists at its end."""
    client = redis.Redis.from_url(url)
    try:
        time.sleep(block_s)
        return bool(client.exists(key))
    finally:
        client.close()


async def test_a_worker_busy_for_longer_than_its_heartbeat_ttl_stays_alive(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=(), heartbeat_ttl_s=TTL_S, heartbeat_stall_limit_s=10.0)
    async with running_worker(settings, providers={}, worker_id="busy-worker"):
        key = keys.worker_heartbeat("busy-worker")
        await _beating(redis_url, key)
        # Three TTLs without a turn of the loop: before the liveness thread, the key had lapsed.
        assert _alive_after_blocking(redis_url, key, 3 * TTL_S)


async def test_a_worker_hung_past_the_stall_limit_is_let_go(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=(), heartbeat_ttl_s=TTL_S, heartbeat_stall_limit_s=0.5)
    async with running_worker(settings, providers={}, worker_id="hung-worker"):
        key = keys.worker_heartbeat("hung-worker")
        await _beating(redis_url, key)
        # Stall limit 0.5 s + TTL 0.8 s (+ one 0.2 s refresh): gone well before 3 s.
        assert not _alive_after_blocking(redis_url, key, 3.0)


async def test_a_stopped_worker_leaves_no_heartbeat(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=(), heartbeat_ttl_s=TTL_S)
    async with running_worker(settings, providers={}, worker_id="gone-worker"):
        pass
    await asyncio.sleep(2 * 0.2)  # a refresh the thread might still have had in flight
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert not await client.exists(keys.worker_heartbeat("gone-worker"))
    finally:
        await client.aclose()
