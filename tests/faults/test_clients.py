"""Clients that misbehave: one stops reading, one vanishes mid-stream, one floods. Others never notice."""

from __future__ import annotations

import asyncio
import functools
import time

import aiohttp
import psutil
from emulator.synth import decode_text
from gateway.wsedge import SHED_GRACE_S

from shared.errors import ERRORS_BY_CODE
from tests.faults.support import RawWS, Stack, metric, report, start_stack, until
from tests.support.procs import Proc, Procs
from tests.support.stack import NativeClient

# Long enough to stream for minutes at the paced rate: only the gateway can end it early.
ENDLESS = "Words keep flowing out of the speaker without a pause. " * 360
GOOD = "A patient listener reads every frame as it comes, so nothing is dropped. " * 6


async def test_client_that_stops_reading_is_cut_off_with_4408_and_memory_stays_bounded(
        procs: Procs, redis_url: str) -> None:
    # Paced upstream (25x real time, 500 ms chunks): a reading client has 64 frames = 1.3 s of slack, a
    # stalled one (48 kHz, 2.4 MB/s) overflows once the kernel's socket buffers (~11 MB here) are full.
    stack = await start_stack(procs, redis_url, emulator={"realtime_factor": 25, "chunk_ms": 500},
                              SESSION_QUEUE_FRAMES=64)
    gw = psutil.Process(stack.gateway.pid)
    rss_before = gw.memory_info().rss
    # Two clients stop reading after the session event: one comes back to read later, one never does.
    stuck, dead = [await RawWS.connect(stack.base, rcvbuf=4096) for _ in range(2)]
    for ws in (stuck, dead):
        assert ws.status == 101
        await ws.read_frame()
        # Input left open (flushed, never ended): only the gateway's cancel can close it upstream.
        ws.send_json(type="start", context_id="flood", format="pcm_48000", text=ENDLESS, flush=True)
        await ws.drain()
    rss_peak = rss_before
    async with aiohttp.ClientSession() as http, NativeClient.connect(stack.base, http) as good:
        # A well-behaved client on the same gateway streams at the same pace while the other one stalls.
        await good.send(type="start", context_id="ok", format="pcm_8000", text=GOOD, end=True)
        listening = asyncio.create_task(good.pump_until(lambda c: c.ended("ok"), 60))

        async def shed() -> bool:
            nonlocal rss_peak
            rss_peak = max(rss_peak, gw.memory_info().rss)
            return await metric(stack.gateway, "tts_slow_consumer_closes_total") >= 2

        waited = await until(shed, 60, "the stalled client counted as a slow consumer", every=0.1)
        # From the cut on, both stalled sessions' upstream contexts must be closed (within the grace).
        # The good context's own close_context (its end of input) is already counted.
        closing = asyncio.create_task(until(lambda: _emu_closes(stack, 3), SHED_GRACE_S + 10,
                                            "close_context sent upstream for both stalled sessions"))
        events, frames, code = await stuck.read_until_close(10)
        await listening
        assert not good.ws.closed and not good.session_errors
        # The one that never reads is not waited on: after the grace its connection is cut.
        await asyncio.sleep(SHED_GRACE_S + 1)
        _, _, dead_code = await dead.read_until_close(10)
    stuck.close()
    dead.close()
    # Ended either way: the 4408 close if it still fit into the kernel's buffers, else a reset.
    assert dead_code in (4408, None), dead_code
    codes = [e.get("code") for e in events if e.get("type") == "error"]
    assert code == 4408, (code, events[-3:])
    assert codes == ["slow_consumer"], codes
    res = good.result("ok")
    assert res.final is not None, res.error
    assert decode_text(res.audio, 8000) == GOOD
    # The stalled session's upstream context was closed, and nothing is left counted as live.
    upstream_closed = await closing
    await until(lambda: _gauge_zero(stack.gateway, "tts_active_contexts"), 10, "gateway contexts back to zero")
    growth_mb = (rss_peak - rss_before) / 2**20
    assert growth_mb < 40, f"gateway RSS grew {growth_mb:.1f} MB while a client stalled"
    report("slow_consumer", stalled_to_cut_s=round(waited, 2), frames_absorbed_by_tcp=frames,
           upstream_close_after_cut_s=round(upstream_closed, 3), rss_before_mb=round(rss_before / 2**20, 1),
           rss_peak_mb=round(rss_peak / 2**20, 1), session_queue_frames=64)


async def _emu_closes(stack: Stack, n: int) -> bool:
    return (await stack.emu_stats())["messages_received"].get("close_context", 0) >= n


async def _gauge_zero(proc: Proc, name: str) -> bool:
    return await metric(proc, name) == 0


def _documented(code: str | None) -> bool:
    return code in ERRORS_BY_CODE and code != "internal_error"



async def test_client_that_vanishes_mid_stream_frees_every_upstream_context(procs: Procs, redis_url: str) -> None:
    stack = await start_stack(procs, redis_url, emulator={"realtime_factor": 4, "chunk_ms": 100})
    text = "This sentence streams for a good while before anybody interrupts it. " * 4
    # One client closes its WebSocket politely, one just drops the TCP connection, both mid-stream.
    async with aiohttp.ClientSession() as http, NativeClient.connect(stack.base, http) as polite:
        raw = await RawWS.connect(stack.base)
        await raw.read_frame()
        for i in range(3):  # LLM-style: text flushed, input never ended, so only a cancel closes them upstream
            await polite.send(type="start", context_id=f"p{i}", format="pcm_16000", text=text, flush=True)
            raw.send_json(type="start", context_id=f"r{i}", format="pcm_16000", text=text, flush=True)
        await raw.drain()
        await polite.pump_until(lambda c: all(c.result(f"p{i}").frames for i in range(3)), 20)
        raw_frames = 0
        while raw_frames < 3:
            op, _ = await raw.read_frame()
            raw_frames += op == 0x2
        stats = await stack.emu_stats()
        assert stats["contexts_active"] == 6 and stats["messages_received"].get("close_context", 0) == 0
        t_gone = time.monotonic()
        raw.abort()
        await polite.ws.close()
    await until(lambda: _emu_closes(stack, 6), 5, "close_context sent upstream for all six")
    closed = time.monotonic() - t_gone
    # The emulator, like ElevenLabs, finishes a generation already under way before it frees the slot.
    idle = await until(stack.emu_idle, 30, "every upstream context closed")
    for name in ("tts_active_contexts", "tts_active_sessions"):
        await until(functools.partial(_gauge_zero, stack.gateway, name), 5, f"gateway {name} back to zero")
    await until(lambda: _gauge_zero(stack.workers[0], "tts_worker_active_jobs"), 5, "worker jobs back to zero")
    assert (await stack.emu_stats())["ws_connections_active"] >= 1  # the pooled socket stays for others
    report("client_vanished", contexts=6, close_context_upstream_after_s=round(closed, 3),
           upstream_slots_free_after_s=round(closed + idle, 3))


async def test_client_flooding_past_its_limits_is_refused_and_others_stay_responsive(
        procs: Procs, redis_url: str) -> None:
    stack = await start_stack(procs, redis_url, emulator={"realtime_factor": 4, "chunk_ms": 100},
                              MAX_CONTEXTS_PER_SESSION=4, MAX_CONTEXT_CHARS=20000)
    async with aiohttp.ClientSession() as http, NativeClient.connect(stack.base, http) as flood, \
            NativeClient.connect(stack.base, http) as calm:
        # Ten contexts at once: the first four run, the other six are refused, the session lives on.
        for i in range(10):
            await flood.send(type="start", context_id=f"f{i}", format="pcm_16000", text="Waiting words ")
        # Then a token storm into one context (more characters than a context may hold) and a ping storm.
        for i in range(5000):
            await flood.send(type="text", context_id="f0", text="abcd ")
        for i in range(2000):
            await flood.send(type="ping", id=i)
        rtts: list[float] = []
        t_calm = time.monotonic()
        for i in range(20):  # meanwhile the calm client's pings and speech go through
            t = time.monotonic()
            await calm.send(type="ping", id=f"calm{i}")
            await calm.pump_until(lambda c, i=i: any(e.get("id") == f"calm{i}" for e in c.other), 10)
            rtts.append(time.monotonic() - t)
        res = await calm.speak("c1", "Calm and unaffected.", format="pcm_16000", timeout=20)
        calm_s = time.monotonic() - t_calm
        await flood.pump_until(lambda c: sum(e.get("type") == "pong" for e in c.other) == 2000, 60)
        flood_cut_off = flood.ws.closed
    assert res.final is not None, res.error
    assert decode_text(res.audio, 16000) == "Calm and unaffected."
    refused = [cid for cid, r in flood.results.items() if r.error and r.error["code"] == "too_many_contexts"]
    assert sorted(refused) == [f"f{i}" for i in range(4, 10)], refused
    assert all(flood.result(f"f{i}").started for i in range(4))
    too_long = [e for e in flood.result("f0").events if e.get("code") == "text_too_long"]
    assert len(too_long) == 5000 - (20000 - len("Waiting words ")) // 5, len(too_long)
    assert not flood.session_errors and not flood_cut_off  # refused, never disconnected
    assert all(_documented(e.get("code")) for r in flood.results.values() for e in r.events if e["type"] == "error")
    assert max(rtts) < 1.0, rtts
    report("flood", refused_contexts=len(refused), text_too_long=len(too_long), pongs=2000,
           calm_ping_rtt_ms_max=round(max(rtts) * 1000, 1), calm_ping_rtt_ms_p50=round(sorted(rtts)[10] * 1000, 1),
           calm_pings_and_utterance_s=round(calm_s, 2))
