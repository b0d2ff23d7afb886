"""Phrase cache in front of the ElevenLabs provider (against the emulator): hits cause no upstream traffic,
and a tenant's custom voice is never served to another tenant. Also measures hit vs miss TTFA."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from emulator.config import EmulatorConfig
from emulator.runner import DEFAULT_VOICE_ID, RunningEmulator, run_emulator

from tests.gateway.tenancy_support import Stack, tenancy_settings, wait_ready
from tests.support.stack import NativeClient, running_gateway, running_worker

PHRASE = "Your appointment is confirmed for Tuesday at ten."
CUSTOM_VOICE = "JBFqnCBsd6RMkjVDRZzb"  # a voice the emulator knows but ELEVENLABS_VOICES does not list


@contextlib.asynccontextmanager
async def el_cache_stack(redis_url: str, **overrides: Any) -> AsyncIterator[tuple[Stack, RunningEmulator]]:
    """Emulator + ElevenLabs-provider worker + gateway with keys enforced and the cache on."""
    async with run_emulator(EmulatorConfig()) as emu:
        settings = tenancy_settings(
            redis_url, providers=("elevenlabs",), elevenlabs_base_url=emu.http_url,
            elevenlabs_api_key="test-upstream-key", default_voice=DEFAULT_VOICE_ID,
            elevenlabs_voices=(DEFAULT_VOICE_ID,), pool_min_sockets=1, upstream_concurrency=50,
            cache_enabled=True, **overrides)
        async with running_worker(settings), running_gateway(settings) as base, aiohttp.ClientSession() as http:
            await wait_ready(base, http)
            yield Stack(base, http, settings), emu


async def _speak(s: Stack, key: str, cid: str, text: str, **start: Any) -> Any:
    async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": key}) as c:
        return await c.speak(cid, text, format="pcm_16000", timeout=30, **start)


async def _settle_store() -> None:
    await asyncio.sleep(0.2)  # the store runs after the final went out


async def test_hit_sends_nothing_upstream_and_custom_voices_stay_per_tenant(redis_url: str) -> None:
    async with el_cache_stack(redis_url, cache_share_across_tenants=True) as (s, emu):
        a = (await s.create_key("tenant-a"))["key"]
        b = (await s.create_key("tenant-b"))["key"]
        miss = await _speak(s, a, "m", PHRASE)
        assert miss.final["cached"] is False, miss.error
        await _settle_store()
        emu.reset_stats()
        hit = await _speak(s, b, "h", PHRASE)  # a catalogue voice: shared across tenants (opted in)
        assert hit.final["cached"] is True
        assert hit.audio == miss.audio and hit.seqs == miss.seqs
        assert [e for e in hit.events if e["type"] == "alignment"] == \
            [{**e, "context_id": "h"} for e in miss.events if e["type"] == "alignment"]
        await asyncio.sleep(0.1)
        assert emu.stats.contexts_opened == 0 and emu.stats.characters_synthesized == 0
        assert emu.stats.ws_connections_opened == 0 and emu.stats.http_requests_total == 0

        # A voice outside the catalogue list is the tenant's own: b never hears a's copy.
        own = await _speak(s, a, "c1", PHRASE, voice=CUSTOM_VOICE)
        assert own.final["cached"] is False, own.error
        await _settle_store()
        other = await _speak(s, b, "c2", PHRASE, voice=CUSTOM_VOICE)
        assert other.final["cached"] is False
        again = await _speak(s, a, "c3", PHRASE, voice=CUSTOM_VOICE)
        assert again.final["cached"] is True and again.audio == own.audio
        assert emu.stats.contexts_opened == 2


async def _ttfa(s: Stack, key: str, text: str, **start: Any) -> tuple[float, bool]:
    async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": key}) as c:
        t0 = time.perf_counter()
        await c.send(type="start", context_id="t", text=text, end=True, format="pcm_16000", **start)
        await c.pump_until(lambda c: bool(c.result("t").frames) or c.ended("t"), timeout=30)
        first = time.perf_counter() - t0
        await c.pump_until(lambda c: c.ended("t"), timeout=30)
        assert c.result("t").final is not None, c.result("t").error
        return first * 1000, bool(c.result("t").final["cached"])


async def test_measure_cache_hit_ttfa_against_a_miss(redis_url: str) -> None:
    """Client-side time from ``start`` to the first audio frame, native WS, emulator upstream."""
    async with el_cache_stack(redis_url) as (s, _emu):
        key = (await s.create_key("bench", quota_chars=None, max_contexts=None, rate_per_minute=None))["key"]
        await _ttfa(s, key, "Warm up the pool and the code paths.", cache=False)
        misses, hits = [], []
        for i in range(15):
            text = f"Order number {i} has shipped and will arrive on Friday."
            ms, cached = await _ttfa(s, key, text)
            assert not cached
            misses.append(ms)
            await _settle_store()
            ms, cached = await _ttfa(s, key, text)
            assert cached
            hits.append(ms)
    report = (f"\ncache TTFA (emulator upstream, native WS, n={len(hits)}): "
              f"miss p50 {statistics.median(misses):.2f} ms (min {min(misses):.2f}, max {max(misses):.2f}); "
              f"hit p50 {statistics.median(hits):.2f} ms (min {min(hits):.2f}, max {max(hits):.2f})")
    print(report)
    assert statistics.median(hits) < statistics.median(misses)
