"""What one tenant learns or takes from another, on real processes: the phrase cache, the quota, a stuck socket.

Gateway, worker and the ElevenLabs emulator run as processes on a real redis-server (issue 12 items 6,
13 and 14). Figures go to tests/artifacts/reliability.jsonl (``report``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import psutil
import redis.asyncio as aioredis

from shared import keys
from tests.faults.support import ADMIN_TOKEN, RawWS, metric, report, start_stack, until
from tests.faults.test_security import secure_stack
from tests.support.procs import Procs
from tests.support.stack import ContextResult, NativeClient

SECRET_PHRASE = "Your one-time code is 123456."
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def _key(http: aiohttp.ClientSession, base: str, name: str, **limits: Any) -> str:
    async with http.post(base + "/admin/keys", json={"name": name, **limits}, headers=ADMIN) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        return str(body["key"])


async def _speak(http: aiohttp.ClientSession, base: str, key: str, cid: str, text: str) -> tuple[ContextResult, float]:
    async with NativeClient.connect(base, http, headers={"xi-api-key": key}) as c:
        t0 = time.perf_counter()
        res = await c.speak(cid, text, format="pcm_16000", timeout=30)
        assert res.final is not None, res.error
        return res, (time.perf_counter() - t0) * 1000


async def _usage(http: aiohttp.ClientSession, base: str, key: str) -> dict[str, Any]:
    async with http.get(base + "/v1/usage", headers={"xi-api-key": key}) as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def test_phrase_cache_never_answers_one_tenant_with_anothers_sentence(procs: Procs, redis_url: str) -> None:
    stack = await secure_stack(procs, redis_url)
    # The stack's gateway runs the default; a second one has the operator's opt-in to sharing.
    private = stack.add_gateway("private", CACHE_ENABLED=True)
    sharing = stack.add_gateway("sharing", CACHE_ENABLED=True, CACHE_SHARE_ACROSS_TENANTS=True)
    await procs.ready(private, sharing)
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with aiohttp.ClientSession() as http:
            a = await _key(http, private.base_url, "tenant-a")
            b = await _key(http, private.base_url, "tenant-b")
            spoken, _ = await _speak(http, private.base_url, a, "a1", SECRET_PHRASE)
            assert spoken.final["cached"] is False
            await until(lambda: _stored(r, 1), 10, "tenant a's utterance stored")
            # Tenant b asks for the exact sentence on the same catalogue voice: a miss, and b pays for it.
            probe, probe_ms = await _speak(http, private.base_url, b, "b1", SECRET_PHRASE)
            assert probe.final["cached"] is False
            assert probe.audio == spoken.audio  # the same words, synthesized again for b
            again, hit_ms = await _speak(http, private.base_url, a, "a2", SECRET_PHRASE)
            assert again.final["cached"] is True  # a's own entry still serves a
            await until(lambda: _charged(http, private.base_url, b, len(SECRET_PHRASE)), 10, "b charged")
            # Opted in: a catalogue voice's phrase is shared (the documented trade-off).
            await _speak(http, sharing.base_url, a, "s1", SECRET_PHRASE)
            await until(lambda: _stored(r, 3), 10, "the shared entry stored")
            shared, shared_ms = await _speak(http, sharing.base_url, b, "s2", SECRET_PHRASE)
            assert shared.final["cached"] is True
    finally:
        await r.aclose()
    report("cache_per_tenant", other_tenant_probe_ms=round(probe_ms, 1), own_hit_ms=round(hit_ms, 1),
           opted_in_cross_tenant_hit_ms=round(shared_ms, 1))


async def _stored(r: aioredis.Redis, n: int) -> bool:
    return int(await r.zcard(keys.CACHE_INDEX)) >= n


async def _charged(http: aiohttp.ClientSession, base: str, key: str, chars: int) -> bool:
    return int((await _usage(http, base, key))["days"][0]["characters"]) == chars


async def test_streams_reserve_exactly_what_they_send_so_a_small_quota_serves_all(procs: Procs,
                                                                                   redis_url: str) -> None:
    stack = await secure_stack(procs, redis_url)
    async with aiohttp.ClientSession() as http:
        key = await _key(http, stack.base, "small", quota_chars=100, max_contexts=None, rate_per_minute=None)
        auth = {"xi-api-key": key}
        # 30 streams open at once (3 sessions x 10), then each streams 3 characters: 90 of the 100.
        async with NativeClient.connect(stack.base, http, headers=auth) as c1, \
                NativeClient.connect(stack.base, http, headers=auth) as c2, \
                NativeClient.connect(stack.base, http, headers=auth) as c3:
            clients = (c1, c2, c3)
            for i in range(30):
                await clients[i % 3].send(type="start", context_id=f"s{i}", format="pcm_16000")
            for i in range(30):
                c = clients[i % 3]
                await c.send(type="text", context_id=f"s{i}", text="Hi.", flush=True)
                await c.send(type="end", context_id=f"s{i}")
            await asyncio.gather(*(c.pump_until(lambda c, n=n: all(c.ended(f"s{i}") for i in range(n, 30, 3)), 60)
                                   for n, c in enumerate(clients)))
            results = [clients[i % 3].result(f"s{i}") for i in range(30)]
            refused = [r.error["code"] for r in results if r.error is not None]
            assert not refused, refused
            assert all(r.final["reason"] == "completed" and r.audio for r in results)
            await until(lambda: _settled(http, stack.base, key, 90), 10, "30 x 3 characters settled")
            # The last 10 characters are there to spend: 11 are refused, 10 are served.
            await c1.send(type="start", context_id="over", format="pcm_16000")
            await c1.send(type="text", context_id="over", text="Eleven char", flush=True)
            await c1.pump_until(lambda c: c.ended("over") or c.result("over").error is not None, 10)
            err = c1.result("over").error
            assert err is not None and err["code"] == "quota_exceeded", err
            assert err["details"]["remaining_chars"] == 10
            await c1.send(type="cancel", context_id="over")
            last = await c1.speak("last", "Ten chars.", format="pcm_16000", timeout=30)
            assert last.final is not None and last.final["reason"] == "completed", last.error
        await until(lambda: _settled(http, stack.base, key, 100), 10, "the whole quota spent, nothing held")
        usage = await _usage(http, stack.base, key)
    assert usage["remaining_today"] == 0
    report("quota_exact_streaming", streams=30, chars_each=3, quota=100, refused=0,
           used_after=usage["days"][0]["characters"])


async def _settled(http: aiohttp.ClientSession, base: str, key: str, chars: int) -> bool:
    day = (await _usage(http, base, key))["days"][0]
    return int(day["characters"]) == chars and int(day["reserved"]) == 0


ENDLESS = "Words keep flowing out of the speaker without a pause. " * 360


async def test_a_stuck_client_is_cut_off_by_bytes_buffered_not_frames(procs: Procs, redis_url: str) -> None:
    # A frame limit no stuck client reaches in this test: only the byte limit can end it.
    limit = 256 << 10
    stack = await start_stack(procs, redis_url, emulator={"realtime_factor": 25, "chunk_ms": 500},
                              SESSION_QUEUE_FRAMES=1_000_000, SESSION_QUEUE_BYTES=limit)
    gw = psutil.Process(stack.gateway.pid)
    rss_before = rss_peak = gw.memory_info().rss
    stuck = await RawWS.connect(stack.base, rcvbuf=4096)
    assert stuck.status == 101
    await stuck.read_frame()
    stuck.send_json(type="start", context_id="flood", format="pcm_48000", text=ENDLESS, flush=True)
    await stuck.drain()

    async def shed() -> bool:
        nonlocal rss_peak
        rss_peak = max(rss_peak, gw.memory_info().rss)
        return await metric(stack.gateway, "tts_slow_consumer_closes_total") >= 1

    waited = await until(shed, 60, "the stuck client counted as a slow consumer", every=0.1)
    stuck.abort()
    await until(lambda: _no_contexts(stack.gateway), 15, "the stuck session's context ended")
    growth_mb = (rss_peak - rss_before) / 2**20
    assert growth_mb < 20, f"gateway RSS grew {growth_mb:.1f} MB for one stuck client"
    report("slow_consumer_bytes", session_queue_bytes=limit, stalled_to_cut_s=round(waited, 2),
           rss_growth_mb=round(growth_mb, 1))


async def _no_contexts(proc: Any) -> bool:
    return await metric(proc, "tts_active_contexts") == 0


CACHED = ("This greeting is long enough that its cached audio is well over a megabyte at forty-eight "
          "kilohertz, so a client that never reads would pile up memory fast if cache hits were not "
          "counted against the session's byte budget like every other frame.")


async def test_a_stuck_client_cannot_pile_up_cache_hits(procs: Procs, redis_url: str) -> None:
    # Below one cached entry (~1.4 MB), yet above what a client that does read can fall behind on a
    # loaded 2-core box while the emulator sends faster than real time (256 KiB shed the priming reader).
    limit = 768 << 10
    stack = await start_stack(procs, redis_url, CACHE_ENABLED=True, SESSION_QUEUE_BYTES=limit)
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with aiohttp.ClientSession() as http, NativeClient.connect(stack.base, http) as c:
            primed = await c.speak("prime", CACHED, format="pcm_48000", timeout=60)
            assert primed.final is not None, (primed.error, c.session_errors)
        assert primed.final["audio_bytes"] > limit, primed.final
        await until(lambda: _stored(r, 1), 10, "the phrase stored")
    finally:
        await r.aclose()
    gw = psutil.Process(stack.gateway.pid)
    rss_before = rss_peak = gw.memory_info().rss
    stuck = await RawWS.connect(stack.base, rcvbuf=4096)
    assert stuck.status == 101
    await stuck.read_frame()
    hits = 40  # ~60 MB of audio if every hit were queued
    for i in range(hits):
        stuck.send_json(type="start", context_id=f"h{i}", format="pcm_48000", text=CACHED, end=True)
    await stuck.drain()

    async def shed() -> bool:
        nonlocal rss_peak
        rss_peak = max(rss_peak, gw.memory_info().rss)
        return await metric(stack.gateway, "tts_slow_consumer_closes_total") >= 1

    await until(shed, 30, "the stuck client counted as a slow consumer", every=0.1)
    for _ in range(20):  # whatever was still coming in is refused, not queued
        rss_peak = max(rss_peak, gw.memory_info().rss)
        await asyncio.sleep(0.1)
    stuck.abort()
    await until(lambda: _no_contexts(stack.gateway), 15, "no context left")
    growth_mb = (rss_peak - rss_before) / 2**20
    assert growth_mb < 20, f"gateway RSS grew {growth_mb:.1f} MB for one stuck client asking for cache hits"
    report("slow_consumer_cache_hits", entry_bytes=primed.final["audio_bytes"], hits_asked=hits,
           session_queue_bytes=limit, rss_growth_mb=round(growth_mb, 1))
