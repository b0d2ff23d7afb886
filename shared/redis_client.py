"""Redis clients configured the same way in every process."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def create_redis(url: str, *, max_connections: int = 64) -> aioredis.Redis:
    """A pooled client that fails fast while Redis is down and reconnects by itself afterwards."""
    return aioredis.Redis.from_url(
        url,
        max_connections=max_connections,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
        health_check_interval=15,
        # Two quick retries ride over a restarting server's first refused connects.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
    )
