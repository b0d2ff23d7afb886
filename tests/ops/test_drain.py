"""Graceful drain, proven on real processes: SIGTERM mid-utterance loses no audio that fits the grace."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import msgpack
import redis.asyncio as aioredis

from shared import keys
from tests.support.procs import Procs
from tests.support.stack import NativeClient

LONG = ("The quick brown fox jumps over the lazy dog while the orchestra tunes its instruments. "
        "Meanwhile the rain keeps falling on the quiet village, and nobody seems to mind at all. "
        "By evening the streets are empty, the lamps are lit, and the story comes to its end.")


async def test_gateway_sigterm_lets_the_utterance_finish_then_closes_1001(procs: Procs, redis_url: str) -> None:
    worker = procs.worker(redis_url, DRAIN_GRACE_S=20)
    gw = procs.gateway(redis_url, DRAIN_GRACE_S=20)
    await procs.ready(worker, gw)
    async with aiohttp.ClientSession() as http, NativeClient.connect(gw.base_url, http) as client:
        await client.send(type="start", context_id="d1", format="pcm_16000", text=LONG, end=True)
        await client.pump_until(lambda c: len(c.result("d1").frames) >= 1, 30)
        t_term = time.monotonic()
        gw.terminate()
        await client.pump_until(lambda c: c.ended("d1"), 30)
        t_final = time.monotonic()
        close = await _close_frame(client)
        t_close = time.monotonic()
    res = client.result("d1")
    assert res.error is None, res.error
    assert res.final is not None and res.final["reason"] == "completed"
    assert res.seqs == list(range(len(res.frames)))
    assert len(res.audio) / 32000 > 5.0
    assert (close.data, close.extra) == (1001, "shutting_down")
    assert any(e.get("code") == "shutting_down" for e in client.session_errors)
    assert await gw.wait_exit(15) == 0
    assert [c["context_id"] for c in gw.events("context_summary")] == ["d1"]
    print(f"gateway: final {t_final - t_term:.3f}s after SIGTERM, close {t_close - t_term:.3f}s")


async def test_gateway_drain_grace_bounds_an_endless_context(procs: Procs, redis_url: str) -> None:
    worker = procs.worker(redis_url)
    gw = procs.gateway(redis_url, DRAIN_GRACE_S=1)
    await procs.ready(worker, gw)
    async with aiohttp.ClientSession() as http, NativeClient.connect(gw.base_url, http) as client:
        # Input never ends: only the grace period can end this context.
        await client.send(type="start", context_id="e1", format="pcm_16000", text="Still talking. ", flush=True)
        await client.pump_until(lambda c: len(c.result("e1").frames) >= 1, 30)
        t_term = time.monotonic()
        gw.terminate()
        # The listener closes first: nobody new gets in while the old ones finish.
        async with asyncio.timeout(2):
            while True:
                try:
                    async with http.get(gw.base_url + "/healthz"):
                        pass
                except aiohttp.ClientConnectionError:
                    break
                await asyncio.sleep(0.02)
        close = await _close_frame(client)
        t_close = time.monotonic()
    assert (close.data, close.extra) == (1001, "shutting_down")
    assert [e["code"] for e in client.session_errors] == ["shutting_down"]
    assert 0.9 < t_close - t_term < 4.0, t_close - t_term
    assert await gw.wait_exit(15) == 0
    # The cut-off context's job was cancelled on the worker, not left running.
    async with asyncio.timeout(5):
        while not worker.events("job_summary"):
            await asyncio.sleep(0.05)
    assert worker.events("job_summary")[0]["outcome"] == "cancelled"
    print(f"gateway: grace 1 s, closed 1001 {t_close - t_term:.3f}s after SIGTERM")



async def test_worker_sigterm_finishes_running_utterance_and_stops_taking_jobs(procs: Procs, redis_url: str) -> None:
    old = procs.worker(redis_url, name="worker-old", DRAIN_GRACE_S=20)
    gw = procs.gateway(redis_url, JOB_START_TIMEOUT_S=20)
    await procs.ready(old, gw)
    sentences = [s.strip() + " " for s in LONG.split(". ")]
    async with aiohttp.ClientSession() as http, NativeClient.connect(gw.base_url, http) as client:
        # A streamed context keeps its job running for as long as the client sends text.
        await client.send(type="start", context_id="w1", format="pcm_16000", text=sentences[0], flush=True)
        await client.pump_until(lambda c: len(c.result("w1").frames) >= 1, 30)
        t_term = time.monotonic()
        old.terminate()
        # Within a beat the worker says it drains: gateways stop counting it.
        async with asyncio.timeout(3):
            while not any(h.get("draining") for h in await _worker_heartbeats(redis_url)):
                await asyncio.sleep(0.02)
        t_marked = time.monotonic()
        # The gateway's catalogue caches heartbeats for half a second.
        async with asyncio.timeout(2):
            while True:
                async with http.get(gw.base_url + "/readyz") as resp:
                    if resp.status == 503:
                        assert (await resp.json())["status"] == "no_workers"
                        break
                await asyncio.sleep(0.05)
        async with http.get(f"{old.base_url}/readyz") as resp:
            assert resp.status == 503 and (await resp.json())["status"] == "draining"
        # Work arriving during the drain waits in the queue for the replacement, not for the old one.
        await client.send(type="start", context_id="w2", format="pcm_16000", text="After the roll.", end=True)
        for s in sentences[1:]:
            await asyncio.sleep(0.3)
            await client.send(type="text", context_id="w1", text=s, flush=True)
        await client.send(type="end", context_id="w1")
        await client.pump_until(lambda c: c.ended("w1"), 30)
        t_final = time.monotonic()
        assert await old.wait_exit(15) == 0
        t_exit = time.monotonic()
        assert not client.ended("w2")
        new = procs.worker(redis_url, name="worker-new")
        await client.pump_until(lambda c: c.ended("w2"), 30)
    res, res2 = client.result("w1"), client.result("w2")
    assert res.error is None, res.error
    assert res.final is not None and res.final["reason"] == "completed", res.final
    assert res.seqs == list(range(len(res.frames)))
    assert res.final["characters"] == sum(len(s) for s in sentences)
    assert res2.error is None and res2.final is not None and res2.final["reason"] == "completed"
    done = old.events("job_summary")
    assert [j["context_id"] for j in done] == ["w1"] and done[0]["outcome"] == "completed"
    assert [j["context_id"] for j in new.events("job_summary")] == ["w2"]
    assert old.events("worker_draining") and old.events("worker_stopped")
    print(f"draining advertised {t_marked - t_term:.3f}s after SIGTERM, final {t_final - t_term:.3f}s, "
          f"exit {t_exit - t_final:.3f}s after the final")


async def _close_frame(client: NativeClient) -> aiohttp.WSMessage:
    """Read up to the server's close frame, recording what came before it.

    The frame's code is what the server said. (``ws.close_code`` may read 1006 instead: aiohttp's
    server closes the connection right after its close frame when a reader is running, and the
    client's own reply then fails.)
    """
    while True:
        msg = await client.ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return msg
        client.handle(msg)


async def _worker_heartbeats(redis_url: str) -> list[dict[str, Any]]:
    r = aioredis.Redis.from_url(redis_url)
    try:
        found = [k async for k in r.scan_iter(match=keys.WORKER_HEARTBEAT_PATTERN)]
        vals = await r.mget(found) if found else []
        return [msgpack.unpackb(v, raw=False) for v in vals if v]
    finally:
        await r.aclose()
