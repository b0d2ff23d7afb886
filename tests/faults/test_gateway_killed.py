"""A gateway SIGKILLed with contexts open: its clients drop, its jobs stop upstream, the other gateway never notices."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import redis.asyncio as aioredis
from emulator.synth import decode_text

from tests.faults.support import assert_no_orphans, report, start_stack, until
from tests.support.procs import Procs
from tests.support.stack import NativeClient
from tests.support.timing import LOAD_MARGIN_S

SPEECH = "This sentence keeps its worker busy for a while, long after its listener is gone. " * 3
SURVIVOR_SPEECH = "The other gateway keeps talking as if nothing happened at all."


async def test_gateway_sigkill_stops_its_jobs_upstream_and_spares_the_other_gateway(
        procs: Procs, redis_url: str) -> None:
    stack = await start_stack(procs, redis_url, workers=2, gateways=2,
                              emulator={"realtime_factor": 1, "chunk_ms": 100})
    victim, survivor = stack.gateways
    async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as clients:
        async def connect(base: str) -> NativeClient:
            return await clients.enter_async_context(NativeClient.connect(base, http))

        doomed_speaking = [await connect(victim.base_url) for _ in range(3)]
        doomed_idle = [await connect(victim.base_url) for _ in range(3)]  # input open, nothing flushed
        kept_speaking = [await connect(survivor.base_url) for _ in range(2)]
        kept_idle = [await connect(survivor.base_url) for _ in range(2)]
        for c in doomed_speaking:  # LLM-style: flushed, input never ended, so only a cancel closes them upstream
            await c.send(type="start", context_id="s", format="pcm_16000", text=SPEECH, flush=True)
        for c in [*doomed_idle, *kept_idle]:
            await c.send(type="start", context_id="q", format="pcm_16000", text="Quiet words ")
        for c in doomed_speaking:
            await c.pump_until(lambda c: len(c.result("s").frames) >= 2, 20)
        for c in [*doomed_idle, *kept_idle]:
            await c.pump_until(lambda c: c.result("q").started is not None, 20)
        stats = await stack.emu_stats()
        assert stats["contexts_active"] == 8
        assert stats["messages_received"].get("close_context", 0) == 0  # nothing closed itself upstream yet

        t_kill = time.monotonic()
        victim.kill()
        # The survivor's long utterances start right as the victim dies.
        for c in kept_speaking:
            await c.send(type="start", context_id="s", format="pcm_16000", text=SURVIVOR_SPEECH, end=True)

        async def dropped(c: NativeClient) -> float:
            await c.pump_until(lambda c: False, 10)  # returns at the close/EOF
            assert c.ws.closed or c.ws.close_code is not None
            return time.monotonic() - t_kill

        drops = await asyncio.gather(*(dropped(c) for c in [*doomed_speaking, *doomed_idle]))

        # The six contexts of the dead gateway are closed upstream (the survivor's two speaking ones
        # send their own close_context at their end of input: counted as well, so 6 + 2).
        async def victims_closed() -> bool:
            return int((await stack.emu_stats())["messages_received"].get("close_context", 0)) >= 6 + 2

        await until(victims_closed, 10, "the dead gateway's contexts closed upstream", every=0.02)
        upstream_closed_s = time.monotonic() - t_kill

        for c in kept_speaking:
            await c.pump_until(lambda c: c.ended("s"), 20)
        for c in kept_idle:
            await c.send(type="text", context_id="q", text="and the rest of it.")
            await c.send(type="end", context_id="q")
            await c.pump_until(lambda c: c.ended("q"), 20)
        # The survivor's sessions are still usable afterwards.
        for c in kept_speaking:
            res = await c.speak("after", "Still here.", format="pcm_16000", timeout=15)
            assert res.final is not None and decode_text(res.audio, 16000) == "Still here.", res.error

    for c in kept_speaking:
        res = c.result("s")
        assert res.error is None and res.final is not None, res.events[-2:]
        assert decode_text(res.audio, 16000) == SURVIVOR_SPEECH
        assert not c.session_errors
    for c in kept_idle:
        res = c.result("q")
        assert res.error is None and res.final is not None, res.events[-2:]
        assert decode_text(res.audio, 16000) == "Quiet words and the rest of it."
    # Every job the dead gateway had started was stopped by its worker, and said why.
    gone = [e for w in stack.workers for e in w.events("job_listener_gone")]
    cancelled = [e for w in stack.workers for e in w.events("job_summary") if e.get("outcome") == "cancelled"]
    assert len(cancelled) == 6, cancelled
    assert len(gone) >= 3  # the idle ones at least (a speaking one may notice first from a publish to nobody)
    assert upstream_closed_s < 2.0 + LOAD_MARGIN_S, upstream_closed_s  # promised: within 2 s
    await until(stack.emu_idle, 10, "emulator idle")
    await assert_no_orphans(redis_url)
    r = aioredis.Redis.from_url(redis_url)
    try:
        leases = [k async for k in r.scan_iter(match="tts:upstream:*:leases")]
        held = sum([await r.zcard(k) for k in leases])
        assert held == 0, f"account permits still held: {held}"
        # The dead gateway's liveness key expires by itself (it no longer counts in /admin/status).
        await until(lambda: _gateway_keys(r, expected=1), 10, "dead gateway's heartbeat key expired", every=0.2)
    finally:
        await r.aclose()
    report("gateway_killed", victim_contexts=6, survivor_contexts=4, client_sockets_dropped_after_s_max=round(max(drops), 3),
           upstream_closed_after_s=round(upstream_closed_s, 3), listener_gone_cancels=len(gone), workers=2)


async def _gateway_keys(r: aioredis.Redis, expected: int) -> bool:
    return len([k async for k in r.scan_iter(match="tts:gateway:*")]) == expected
