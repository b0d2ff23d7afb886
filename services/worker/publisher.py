"""Ordered, pipelined PUBLISH: a worker's audio goes out in batches without reordering.

A publisher that awaits every PUBLISH manages only a few thousand messages a second; here one
task drains everything queued since its last round trip into a single pipeline, so batches grow
with load while an idle publisher still sends each frame at once. Order is preserved per process,
hence per channel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.logging import get_logger
from shared.metrics import PUBLISH_BATCH

log = get_logger(__name__)


class Publisher:
    """Queue PUBLISHes; each returns a future of the receiver count."""

    def __init__(self, redis: aioredis.Redis, max_batch: int = 256) -> None:
        self._redis = redis
        self._queue: deque[tuple[str, bytes, asyncio.Future[int]]] = deque()
        self._ready = asyncio.Event()
        self._max_batch = max_batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the sending task."""
        self._task = asyncio.create_task(self._run(), name="publisher")

    async def close(self) -> None:
        """Send what is queued, then stop."""
        deadline = asyncio.get_running_loop().time() + 2.0
        while self._queue and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def publish(self, channel: str, data: bytes) -> asyncio.Future[int]:
        """Queue one message; the future resolves to how many subscribers received it."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((channel, data, fut))
        self._ready.set()
        return fut

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                n = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(n)]
                PUBLISH_BATCH.observe(n)
                try:
                    if n == 1:
                        results = [await self._redis.publish(batch[0][0], batch[0][1])]
                    else:
                        pipe = self._redis.pipeline(transaction=False)
                        for channel, data, _ in batch:
                            pipe.publish(channel, data)
                        results = await pipe.execute()
                except (RedisError, OSError) as e:
                    log.warning("publish_failed", error=type(e).__name__, frames=n)
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                            fut.exception()  # mark retrieved: a job may not await every frame's future
                    continue
                for (_, _, fut), receivers in zip(batch, results):
                    if not fut.done():
                        fut.set_result(int(receivers))
