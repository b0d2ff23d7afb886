"""A hub left idle past redis-py's health-check interval still subscribes (the first session after a pause).

Found by the demo page: ``make run``, wait 15 s, open the page, and the gateway failed every new
session with "read() called while another coroutine is already waiting for incoming data", because
the idle health check's PING reply was read while the hub's reader task was already reading.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from shared.pubsub import PubSubHub


async def test_subscribe_after_idle_health_check_interval(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url, health_check_interval=0.2)
    hub = PubSubHub(redis, service="test")
    await hub.start()
    got: asyncio.Queue[bytes] = asyncio.Queue()
    try:
        await hub.subscribe("tts:test:a", got.put_nowait)
        await hub.unsubscribe("tts:test:a")
        await asyncio.sleep(0.6)  # idle, nothing subscribed: redis-py would now health-check first
        await hub.subscribe("tts:test:b", got.put_nowait)
        await redis.publish("tts:test:b", b"hello")
        assert await asyncio.wait_for(got.get(), 2) == b"hello"
        await asyncio.sleep(0.6)
        await hub.unsubscribe("tts:test:b")
        await hub.subscribe("tts:test:c", got.put_nowait)
        await redis.publish("tts:test:c", b"again")
        assert await asyncio.wait_for(got.get(), 2) == b"again"
    finally:
        await hub.close()
        await redis.aclose()
