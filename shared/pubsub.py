"""One pub/sub connection per process, fanned out to per-channel handlers.

Handlers are plain callables run on the reader task: they must not block (put into a bounded
queue and return). ``subscribe`` returns only once Redis confirmed the subscription, so a caller
can enqueue work whose output will be published there without racing (pub/sub drops messages
published before a subscriber exists). If the connection drops, the hub reconnects with backoff,
resubscribes every channel, and calls ``on_disconnect`` so owners can fail work whose frames
may have been lost in between.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.logging import get_logger
from shared.metrics import FANOUT_DROPPED, REDIS_RECONNECTS

log = get_logger(__name__)
Handler = Callable[[bytes], None]


class PubSubHub:
    """A single subscriber connection routing each channel's messages to its handler."""

    def __init__(self, redis: aioredis.Redis, *, service: str,
                 on_disconnect: Callable[[], None] | None = None,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        self._redis = redis
        self._service = service
        self._handlers: dict[bytes, Handler] = {}
        self._pending: dict[bytes, list[asyncio.Future[None]]] = {}
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        # The subscriber connection and the settings it had before the hub changed them (see _connect).
        self._patched: tuple[Any, int, Any] | None = None
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect

    @property
    def connected(self) -> bool:
        """True while the subscriber connection is up."""
        return self._connected.is_set()

    async def start(self, *channels: str, handler: Handler | None = None) -> None:
        """Open the connection (with optional always-on channels) and start reading."""
        for ch in channels:
            assert handler is not None
            self._handlers[ch.encode()] = handler
        await self._connect()
        self._task = asyncio.create_task(self._run(), name=f"pubsub-{self._service}")

    async def close(self) -> None:
        """Stop reading and close the connection."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_connection()

    async def subscribe(self, channel: str, handler: Handler, timeout: float = 5.0) -> None:
        """Route ``channel`` to ``handler``; returns when Redis confirmed the subscription."""
        key = channel.encode()
        self._handlers[key] = handler
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(fut)
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
                await self._command("SUBSCRIBE", key)
                await fut
        except BaseException:
            self._handlers.pop(key, None)
            waiters = self._pending.get(key, [])
            if fut in waiters:
                waiters.remove(fut)
            if fut.done() and not fut.cancelled():
                fut.exception()  # the reader failed it meanwhile: this caller hears its own error instead
            raise

    async def unsubscribe(self, channel: str) -> None:
        """Stop routing ``channel``; late messages for it are dropped."""
        key = channel.encode()
        if self._handlers.pop(key, None) is not None and self._connected.is_set():
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                await self._command("UNSUBSCRIBE", key)

    async def _command(self, *args: Any) -> None:
        """Send one command on the shared connection; its loss under the command is a ConnectionError.

        The reader task reads this connection while callers write on it, and a dead peer may be noticed
        by either side first: a write can find the transport already closed (uvloop raises RuntimeError,
        "the handler is closed", where asyncio's transport drops the write) or its writer already torn
        down by redis-py's concurrent disconnect (AttributeError on None). Callers handle an outage as a
        RedisError; either of those while the connection is still up is a bug and propagates as it is.
        """
        pubsub = self._pubsub
        try:
            await pubsub.execute_command(*args)
        except (RuntimeError, AttributeError) as e:
            conn = pubsub.connection
            if conn is not None and conn.is_connected:
                raise
            raise RedisConnectionError(f"pubsub connection lost ({type(e).__name__})") from e

    def channel_count(self) -> int:
        """Channels currently routed."""
        return len(self._handlers)

    async def _connect(self) -> None:
        self._pubsub = self._redis.pubsub()
        channels = list(self._handlers)
        if channels:
            await self._pubsub.execute_command("SUBSCRIBE", *channels)
        else:
            await self._pubsub.connect()
        # The reader task owns every read on this connection. redis-py's idle health check (a PING
        # whose reply it reads itself, sent before a command while no channel is subscribed) would
        # read concurrently and fail with "read() called while another coroutine is already waiting";
        # a dead connection shows up as the reader's error instead.
        conn = self._pubsub.connection
        # Nor may redis-py reconnect it behind the reader's back (the client retries on connection
        # errors): it would re-subscribe only the channels its own subscribe() tracked, none here, and
        # the hub would read for ever from a connection subscribed to nothing. A lost connection must
        # reach _run, which resubscribes every channel and tells the owners (on_disconnect).
        self._patched = (conn, conn.health_check_interval, conn.retry_on_error)
        conn.health_check_interval = 0
        conn.retry_on_error = []
        self._connected.set()

    async def _drop_connection(self) -> None:
        self._connected.clear()
        if self._pubsub is not None:
            if self._patched is not None:  # it goes back to the shared pool: restore its checks and retries
                conn, interval, retry_on_error = self._patched
                conn.health_check_interval, conn.retry_on_error = interval, retry_on_error
                self._patched = None
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None

    async def _run(self) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                await self._read_forever()
            except (RedisConnectionError, RedisTimeoutError, OSError) as e:
                if self._closing:
                    return
                log.warning("pubsub_disconnected", service=self._service, error=type(e).__name__)
                await self._drop_connection()
                self._fail_pending(e)
                if self.on_disconnect:
                    self.on_disconnect()
                while not self._closing:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    try:
                        await self._connect()
                    except (RedisConnectionError, RedisTimeoutError, OSError):
                        await self._drop_connection()
                        continue
                    REDIS_RECONNECTS.labels(self._service, "pubsub").inc()
                    log.info("pubsub_reconnected", service=self._service, channels=len(self._handlers))
                    backoff = 0.05
                    if self.on_reconnect:
                        self.on_reconnect()
                    break

    async def _read_forever(self) -> None:
        while True:
            resp = await self._pubsub.parse_response(block=True)
            if not resp or not isinstance(resp, list):
                continue
            kind = resp[0]
            if kind == b"message":
                handler = self._handlers.get(resp[1])
                if handler is None:
                    FANOUT_DROPPED.inc()  # its session (or job) left this process: nobody to hand it to
                    continue
                try:
                    handler(resp[2])
                except Exception:
                    log.exception("pubsub_handler_failed", service=self._service)
            elif kind == b"subscribe":
                for fut in self._pending.pop(resp[1], []):
                    if not fut.done():
                        fut.set_result(None)

    def _fail_pending(self, error: BaseException) -> None:
        for futs in self._pending.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(RedisConnectionError(f"pubsub connection lost: {error}"))
        self._pending.clear()
