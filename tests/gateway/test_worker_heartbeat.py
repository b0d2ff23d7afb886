"""Worker heartbeats are a typed protocol message: what a real worker writes is what the gateway reads.

A heartbeat that does not decode (garbage, another message type, a voice record without its id)
keeps that one worker out of the catalogue; the others are still served.
"""

from __future__ import annotations

import asyncio
import time

import msgpack
import pytest
import redis.asyncio as aioredis
from gateway.catalog import Catalog

from shared import keys, protocol
from shared.errors import ProtocolError
from shared.protocol import WorkerHeartbeat, decode_worker_heartbeat
from tests.conftest import fast_settings
from tests.support.stack import running_worker
from tests.support.timing import LOAD_MARGIN_S

GOOD = WorkerHeartbeat(worker_id="w-good", host="h", pid=42, started_at=1.0, at=2.0, active_jobs=1,
                       max_jobs=4, jobs_done=7, providers={"local": {"loaded": True}},
                       voices=[{"voice_id": "v1", "provider": "local", "name": "One"}])


def test_round_trip_keeps_every_field() -> None:
    assert decode_worker_heartbeat(protocol.encode(GOOD)) == GOOD


@pytest.mark.parametrize("payload", [
    b"\xc1 not msgpack",
    msgpack.packb({"worker_id": "w", "voices": []}),  # the untyped map workers used to write
    msgpack.packb({"v": protocol.VERSION, "t": "worker_heartbeat", "worker_id": "w", "host": "h",
                   "pid": "42", "started_at": 1.0, "at": 2.0}),  # pid of the wrong type
    msgpack.packb({"v": protocol.VERSION, "t": "worker_heartbeat", "worker_id": "w", "host": "h",
                   "pid": 1, "started_at": 1.0, "at": 2.0, "voices": [{"name": "no id"}]}),
    protocol.encode(protocol.Cancel(seq=0, reason="x")),  # a valid message, but not a heartbeat
])
def test_malformed_heartbeat_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_worker_heartbeat(payload)


async def test_gateway_reads_a_real_workers_heartbeat_and_skips_an_unreadable_one(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=("local",))
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.set(keys.worker_heartbeat("w-broken"), msgpack.packb({"worker_id": "w-broken"}), px=60_000)
        async with running_worker(settings, worker_id="w-real"):
            # Ready means its heartbeat task runs; the first beat is written a moment later.
            deadline = time.monotonic() + 5 + LOAD_MARGIN_S
            while not await r.exists(keys.worker_heartbeat("w-real")) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            snap = await Catalog(r).snapshot(max_age=0)
        assert [w.worker_id for w in snap.workers] == ["w-real"]
        beat = snap.workers[0].heartbeat
        assert beat.worker_id == "w-real" and beat.max_jobs == settings.worker_max_jobs and not beat.draining
        assert "local" in beat.providers and snap.providers == {"local"}
        assert snap.voices and all(v["provider"] == "local" for v in snap.voices.values())
    finally:
        await r.aclose()
