"""Redis restarted under load: in-flight contexts fail clearly, every process reconnects by itself."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import aiohttp
import pytest
from emulator.synth import decode_text

from shared.errors import ERRORS_BY_CODE
from shared.redis_server import RedisServer, free_port
from tests.faults.support import assert_no_orphans, report, start_stack
from tests.support.procs import Procs
from tests.support.stack import NativeClient

SPEECH = "A long sentence is still being spoken when the queue underneath it goes away. " * 3
# At least this long down (a session tried during the outage keeps it down ~5 s: it waits that long).
DOWN_S = 2.0


@pytest.fixture
def restartable_redis() -> Iterator[RedisServer]:
    """A private redis-server on a fixed port, so it can come back where everyone expects it."""
    server = RedisServer(port=free_port()).start()
    yield server
    server.stop()


async def test_redis_restart_fails_in_flight_contexts_and_everything_reconnects(
        procs: Procs, restartable_redis: RedisServer) -> None:
    rs = restartable_redis
    stack = await start_stack(procs, rs.url, workers=2, gateways=2,
                              emulator={"realtime_factor": 2, "chunk_ms": 100})
    pids = {p.name: p.pid for p in procs.started}
    async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as clients:
        inflight = [await clients.enter_async_context(NativeClient.connect(g.base_url, http)) for g in stack.gateways]
        for c in inflight:
            await c.send(type="start", context_id="s", format="pcm_16000", text=SPEECH, end=True)
        for c in inflight:
            await c.pump_until(lambda c: len(c.result("s").frames) >= 2, 20)

        t_stop = time.monotonic()
        await asyncio.to_thread(rs.stop)
        failed_after: list[float] = []
        for c in inflight:
            await c.pump_until(lambda c: c.ended("s"), 10)
            failed_after.append(time.monotonic() - t_stop)
        # A session opened while Redis is down waits a moment, then is refused in words (never hangs).
        t_try = time.monotonic()
        refused = await _refused(stack.base, http)
        refused_in = time.monotonic() - t_try
        await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - t_stop)))

        await asyncio.to_thread(rs.start)
        t_up = time.monotonic()
        recovered = await asyncio.gather(*(_first_success(g.base_url, http, t_up) for g in stack.gateways))
        # The sessions that lived through the outage work again too (their channel was resubscribed).
        for c in inflight:
            res = await c.speak("again", "Still here.", format="pcm_16000", timeout=15)
            assert res.final is not None and decode_text(res.audio, 16000) == "Still here.", res.error

    for c in inflight:
        err = c.result("s").error
        assert err is not None and err["code"] == "service_unavailable", c.result("s").events[-2:]
        assert not c.session_errors
    assert refused == "service_unavailable", refused
    assert max(recovered) < 5.0, recovered
    # Nobody was restarted: the same processes serve, and they are all still running.
    assert {p.name: p.pid for p in procs.started} == pids and all(p.running() for p in procs.started)
    await assert_no_orphans(rs.url)
    report("redis_restart", redis_down_s=round(t_up - t_stop, 2), in_flight_failed_after_s_max=round(max(failed_after), 3),
           new_session_ok_after_redis_back_s=[round(x, 3) for x in recovered],
           refused_during_outage_with=refused, refused_after_s=round(refused_in, 3), gateways=2, workers=2)


async def _refused(base: str, http: aiohttp.ClientSession) -> str:
    """The error code a session opened during the outage ends with (at open, or at its first context)."""
    async with http.ws_connect(base.replace("http", "ws", 1) + "/v1/ws") as ws:
        sent = False
        async with asyncio.timeout(15):
            async for msg in ws:
                ev = msg.json()
                if ev["type"] == "session" and not sent:
                    await ws.send_json({"type": "start", "context_id": "d", "text": "Too early.", "end": True})
                    sent = True
                elif ev["type"] == "error":
                    assert ev["code"] in ERRORS_BY_CODE, ev
                    return str(ev["code"])
    raise AssertionError("the session ended without an error")


async def _first_success(base: str, http: aiohttp.ClientSession, since: float) -> float:
    """Seconds from ``since`` until a fresh session on ``base`` completes an utterance."""
    while True:
        with contextlib.suppress(aiohttp.ClientError, AssertionError, TimeoutError):
            async with NativeClient.connect(base, http) as c:
                res = await c.speak("probe", "Welcome back.", format="pcm_16000", timeout=5)
                if res.final is not None and decode_text(res.audio, 16000) == "Welcome back.":
                    return time.monotonic() - since
        if time.monotonic() - since > 15:
            raise AssertionError("no session succeeded within 15 s of Redis coming back")
        await asyncio.sleep(0.1)
