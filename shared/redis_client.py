"""Redis clients configured the same way in every process."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class ConnectionPool(aioredis.ConnectionPool):
    """redis-py's pool without the read probe it runs on every connection it hands out.

    ``ConnectionPool.ensure_connection`` tries a zero-timeout read on each checkout to catch a
    connection that still holds an unread reply or that the server closed. The zero timeout costs a
    cancelled read and an extra turn of the event loop: 20-28 us of CPU on each command or pipeline,
    out of 150-200 (``bench/results/redis-pool/``), paid on every round trip of the hot paths (a
    streamed token's push, a context's claim and cleanup). Neither case it guards against reaches a
    checkout here: redis-py disconnects a connection whose command was interrupted (any exception,
    cancellation included, in ``send_packed_command``/``read_response``) before it goes back, and a
    connection the server closed fails its next command with ConnectionError, which the client's
    retry (below) answers by reconnecting and sending it again; the server never ran the first send.
    """

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        """Connect if needed; no read probe (see the class docstring)."""
        await connection.connect()


def create_redis(url: str, *, max_connections: int = 64) -> aioredis.Redis:
    """A pooled client that fails fast while Redis is down and reconnects by itself afterwards."""
    pool = ConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
        health_check_interval=15,
        # Two quick retries ride over a restarting server's first refused connects, and over a
        # connection the server closed while it sat in the pool.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
