"""Redis closing the hub's connection (a pub/sub client over ``client-output-buffer-limit``, or
``CLIENT KILL``) is a disconnect the hub must see: its subscriptions went with the connection.

Found at 1,000 streams: Redis closed a lagging gateway's subscriber for overcoming its output buffer
limit, redis-py's retry reconnected the connection silently (it re-subscribes only channels its own
``subscribe()`` tracked, and the hub subscribes by command), and the hub read on for ever from a
connection subscribed to nothing. Workers then saw nobody listening and cancelled every job, and
each client waited out its 30 s first-audio timeout with no error logged anywhere.
"""

from __future__ import annotations

import asyncio

from shared.pubsub import PubSubHub
from shared.redis_client import create_redis


async def test_a_killed_subscriber_connection_is_reported_and_every_channel_resubscribed(redis_url: str) -> None:
    redis = create_redis(redis_url)  # the services' own client settings (retries on connection errors)
    disconnects = 0
    reconnected = asyncio.Event()

    def on_disconnect() -> None:
        nonlocal disconnects
        disconnects += 1

    hub = PubSubHub(redis, service="test", on_disconnect=on_disconnect, on_reconnect=reconnected.set)
    await hub.start()
    got: asyncio.Queue[bytes] = asyncio.Queue()
    try:
        for name in ("a", "b"):
            await hub.subscribe(f"tts:test:killed:{name}", got.put_nowait)
        assert await redis.client_kill_filter(_type="pubsub") == 1
        await asyncio.wait_for(reconnected.wait(), 5)
        assert disconnects == 1
        counts = dict(await redis.pubsub_numsub("tts:test:killed:a", "tts:test:killed:b"))
        assert counts == {b"tts:test:killed:a": 1, b"tts:test:killed:b": 1}
        await redis.publish("tts:test:killed:b", b"after")
        assert await asyncio.wait_for(got.get(), 2) == b"after"
    finally:
        await hub.close()
        await redis.aclose()
