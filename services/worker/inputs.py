"""Text, end and cancel messages for running jobs, delivered in order exactly once.

The gateway RPUSHes every input to the job's list and then PUBLISHes it on the job's channel, on one
connection (gateway/dispatch.py). A worker subscribes first, then reads the list: anything sent
before it listened is in the list, anything after reaches it live, and per-job sequence numbers drop
the duplicates and restore order. The worker deletes the list when the job ends (with the job's own
keys, worker/runner.py); the list's TTL (set on a job's first push, refreshed while it streams)
removes it if the worker dies instead. So text sent before the worker picked the job up is never
lost. A Cancel is the exception:
it is delivered the moment it arrives, whatever its seq, because nothing after a cancel matters and
an operator's out-of-band cancel (admin reset, seq 0) has no place in the gateway's numbering.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from shared import keys, protocol
from shared.errors import ProtocolError
from shared.logging import get_logger
from shared.pubsub import PubSubHub

log = get_logger(__name__)


class JobInput:
    """One job's input stream: ``await get()`` returns TextInput/EndInput in seq order, a Cancel at once."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._queue: asyncio.Queue[protocol.Message] = asyncio.Queue()
        self._next = 1
        self._held: dict[int, protocol.Message] = {}
        self._cancelled = False

    def offer_raw(self, data: bytes) -> None:
        """Accept one encoded input message (from the list or the channel)."""
        try:
            msg = protocol.decode(data)
        except ProtocolError as e:
            log.warning("bad_input_frame", job_id=self.job_id, error=e.message)
            return
        if isinstance(msg, protocol.Cancel):
            if not self._cancelled:  # the list replay and the channel both carry it: act once
                self._cancelled = True
                self._queue.put_nowait(msg)
            return
        seq = getattr(msg, "seq", None)
        if not isinstance(seq, int) or seq < self._next or seq in self._held:
            return
        self._held[seq] = msg
        while self._next in self._held:
            self._queue.put_nowait(self._held.pop(self._next))
            self._next += 1

    async def get(self) -> protocol.Message:
        """Next input message in order."""
        return await self._queue.get()


class InputRouter:
    """Opens and closes job inputs on the worker's single pub/sub connection."""

    def __init__(self, redis: aioredis.Redis, hub: PubSubHub) -> None:
        self._redis = redis
        self._hub = hub
        self._open: dict[str, JobInput] = {}

    async def open(self, job_id: str) -> JobInput:
        """Subscribe to the job's channel, then replay its list."""
        inp = JobInput(job_id)
        self._open[job_id] = inp
        await self._hub.subscribe(keys.input_channel(job_id), inp.offer_raw)
        await self._replay(inp)
        return inp

    async def close(self, job_id: str) -> None:
        """Unsubscribe. The list goes with the job's other keys when the runner finishes the job
        (worker/runner.py ``_finish``): one round trip for all of them instead of a DEL of its own."""
        if self._open.pop(job_id, None) is None:
            return
        await self._hub.unsubscribe(keys.input_channel(job_id))

    def cancel_local(self, job_id: str, reason: str) -> None:
        """Cancel a running job from inside the worker (its listener is gone: nobody will send one)."""
        inp = self._open.get(job_id)
        if inp is not None:
            inp.offer_raw(protocol.encode(protocol.Cancel(0, reason)))

    def on_reconnect(self) -> None:
        """After a pub/sub outage, re-read every open job's list to fill what was missed."""
        for inp in list(self._open.values()):
            asyncio.get_running_loop().create_task(self._replay(inp))

    async def _replay(self, inp: JobInput) -> None:
        raws: list[bytes] = await self._redis.lrange(keys.input_list(inp.job_id), 0, -1)  # type: ignore[misc]
        for raw in raws:
            inp.offer_raw(raw)
