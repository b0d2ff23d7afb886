"""Phrase cache through the whole stack: a hit is the miss's frames again, with no job and no worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from shared import keys
from tests.conftest import fast_settings
from tests.gateway.tenancy_support import tenancy_stack, wait_ready
from tests.support.stack import ContextResult, NativeClient, running_gateway, running_worker

PHRASE = "Thanks for calling. How can I help you today?"


def _frames(res: ContextResult) -> list[Any]:
    """Everything the client saw for a context, in order, minus what legitimately differs (timings, ids)."""
    out: list[Any] = []
    for ev in res.events:
        if ev["type"] in ("started", "final"):
            continue
        out.append(ev)
    return out


async def _cache_size(r: aioredis.Redis) -> tuple[int, int]:
    return await r.zcard(keys.CACHE_INDEX), int(await r.get(keys.CACHE_BYTES) or 0)


async def _wait_stored(r: aioredis.Redis, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (await _cache_size(r))[0] < n:
        assert time.monotonic() < deadline, "the completed utterance was never stored"
        await asyncio.sleep(0.01)


async def test_a_cached_phrase_replays_identical_audio_and_alignment_without_a_job(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=("local",), cache_enabled=True, heartbeat_ttl_s=3.0)
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with running_worker(settings) as worker, running_gateway(settings) as base, \
                aiohttp.ClientSession() as http:
            await wait_ready(base, http)
            async with NativeClient.connect(base, http) as c:
                miss = await c.speak("m", PHRASE, format="pcm_16000", timeout=60, options={"alignment": True})
            assert miss.final is not None and miss.final["cached"] is False, miss.error
            await _wait_stored(r, 1)
            jobs_before = worker.jobs_complete
            queued_before = await r.zcard(settings.queue_name)
            # Another session, same words with different spacing: the same phrase.
            async with NativeClient.connect(base, http) as c:
                hit = await c.speak("h", "  Thanks for calling.\n How can I  help you today? ", format="pcm_16000",
                                    timeout=10, options={"alignment": True})
            assert hit.error is None and hit.final is not None
            assert hit.final["cached"] is True and hit.final["reason"] == "completed"
            assert hit.seqs == list(range(len(miss.frames))) == miss.seqs
            assert hit.audio == miss.audio and len(hit.audio) > 16000
            assert [a for _, a in hit.frames] == [a for _, a in miss.frames]
            assert _frames(hit) == [{**e, "context_id": "h"} for e in _frames(miss)]
            assert any(e["type"] == "alignment" for e in _frames(miss))
            assert (hit.final["chunks"], hit.final["audio_bytes"]) == (miss.final["chunks"], miss.final["audio_bytes"])
            # Nothing reached a worker: no job finished, none queued, no job or input keys written.
            assert worker.jobs_complete == jobs_before
            assert await r.zcard(settings.queue_name) == queued_before
            assert not [k async for k in r.scan_iter(match=keys.input_list(hit.started["job_id"]))]
            assert not [k async for k in r.scan_iter(match=f"arq:job:{hit.started['job_id']}")]
            # Case matters, and so do format and the opt-out: each of these is synthesized.
            async with NativeClient.connect(base, http) as c:
                shout = await c.speak("u", PHRASE.upper(), format="pcm_16000", timeout=60)
                other_fmt = await c.speak("f", PHRASE, format="pcm_24000", timeout=60)
                opted_out = await c.speak("o", PHRASE, format="pcm_16000", timeout=60, cache=False)
            assert [x.final["cached"] for x in (shout, other_fmt, opted_out)] == [False, False, False]
            assert worker.jobs_complete == jobs_before + 3
    finally:
        await r.aclose()


async def test_only_whole_completed_utterances_are_stored(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=("local",), cache_enabled=True, heartbeat_ttl_s=3.0)
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with running_worker(settings), running_gateway(settings) as base, aiohttp.ClientSession() as http:
            await wait_ready(base, http)
            async with NativeClient.connect(base, http) as c:
                # Streamed: text after start. Not cacheable, however it ends.
                await c.send(type="start", context_id="s", format="pcm_16000")
                await c.send(type="text", context_id="s", text=PHRASE)
                await c.send(type="end", context_id="s")
                await c.pump_until(lambda c: c.ended("s"), timeout=60)
                assert c.result("s").final is not None
                # Cancelled mid-way: never stored.
                await c.send(type="start", context_id="x", text="This one is interrupted before it ends. " * 3,
                             end=True, format="pcm_16000")
                await c.pump_until(lambda c: bool(c.result("x").frames), timeout=60)
                await c.send(type="cancel", context_id="x")
                await c.pump_until(lambda c: c.ended("x"), timeout=10)
                # Opted out.
                await c.speak("o", "Opted out of the cache.", format="pcm_16000", timeout=60, cache=False)
            await asyncio.sleep(0.3)
            assert await _cache_size(r) == (0, 0)
            async with NativeClient.connect(base, http) as c:
                again = await c.speak("s2", PHRASE, format="pcm_16000", timeout=60)
            assert again.final["cached"] is False
    finally:
        await r.aclose()


async def test_cache_hits_cost_no_quota_and_custom_voices_stay_with_their_tenant(redis_url: str) -> None:
    # Sharing across tenants is the operator's opt-in (the default keeps each tenant's phrases its own).
    async with tenancy_stack(redis_url, cache_enabled=True, cache_share_across_tenants=True) as s:
        a = await s.create_key("a", quota_chars=len(PHRASE), max_contexts=None, rate_per_minute=None)
        b = await s.create_key("b", quota_chars=len(PHRASE), max_contexts=None, rate_per_minute=None)
        async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": a["key"]}) as c:
            first = await c.speak("1", PHRASE, format="pcm_16000", timeout=60)
            assert first.final["cached"] is False
        r = aioredis.Redis.from_url(redis_url)
        try:
            await _wait_stored(r, 1)
        finally:
            await r.aclose()
        # Key b's whole daily quota is this phrase; the hit leaves all of it.
        async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": b["key"]}) as c:
            hit = await c.speak("2", PHRASE, format="pcm_16000", timeout=10)
            assert hit.final["cached"] is True  # local voices are catalogue voices, shared when opted in
        async with s.http.get(s.base + "/v1/usage", headers={"xi-api-key": b["key"]}) as resp:
            usage = await resp.json()
        for _ in range(50):
            if usage["days"][0].get("cached_chars"):
                break
            await asyncio.sleep(0.05)
            async with s.http.get(s.base + "/v1/usage", headers={"xi-api-key": b["key"]}) as resp:
                usage = await resp.json()
        assert usage["days"][0]["characters"] == 0 and usage["days"][0]["cached_chars"] == len(PHRASE)
        assert usage["remaining_today"] == len(PHRASE)


async def test_measure_cache_hit_ttfa_against_a_miss_local_voice(redis_url: str) -> None:
    """Client-side ``start`` → first audio frame through the native WS with the local Piper voice."""
    import statistics

    settings = fast_settings(redis_url, providers=("local",), cache_enabled=True, heartbeat_ttl_s=3.0)
    async with running_worker(settings), running_gateway(settings) as base, aiohttp.ClientSession() as http:
        await wait_ready(base, http)

        async def ttfa(text: str, **start: Any) -> tuple[float, bool]:
            async with NativeClient.connect(base, http) as c:
                t0 = time.perf_counter()
                await c.send(type="start", context_id="t", text=text, end=True, format="pcm_16000", **start)
                await c.pump_until(lambda c: bool(c.result("t").frames) or c.ended("t"), timeout=60)
                first = (time.perf_counter() - t0) * 1000
                await c.pump_until(lambda c: c.ended("t"), timeout=60)
                return first, bool(c.result("t").final["cached"])

        await ttfa("Warm up the voice.", cache=False)
        misses, hits = [], []
        for i in range(8):
            text = f"Order number {i} has shipped."
            ms, cached = await ttfa(text)
            assert not cached
            misses.append(ms)
            await asyncio.sleep(0.2)
            ms, cached = await ttfa(text)
            assert cached
            hits.append(ms)
    print(f"\ncache TTFA (local Piper voice, native WS, n={len(hits)}): miss p50 {statistics.median(misses):.2f} ms "
          f"(min {min(misses):.2f}, max {max(misses):.2f}); hit p50 {statistics.median(hits):.2f} ms "
          f"(min {min(hits):.2f}, max {max(hits):.2f})")
    assert statistics.median(hits) < statistics.median(misses)
