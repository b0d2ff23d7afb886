"""The cache's Redis bookkeeping: keying, size cap with LRU eviction under concurrency, TTL."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from gateway.cache import Hit, PhraseCache, Recorder, digest, normalize
from gateway.contexts import ContextRequest

from shared import keys
from shared.audio.formats import parse_format
from tests.conftest import fast_settings


def _req(text: str = "Hello there.", *, provider: str = "local", voice: str = "joe", fmt: str = "pcm_16000",
         **kw: object) -> ContextRequest:
    return ContextRequest(context_id="c", voice_id=voice, provider=provider, model_id="", fmt=parse_format(fmt),
                          text=text, input_closed=True, **kw)  # type: ignore[arg-type]


def test_normalization_collapses_whitespace_and_keeps_case() -> None:
    assert normalize("  Hello \n\t there.  ") == "Hello there."
    shared: frozenset[str] = frozenset()
    assert digest(_req("Hello   there."), "a", shared) == digest(_req(" Hello there. "), "b", shared)
    assert digest(_req("hello there."), "a", shared) != digest(_req("Hello there."), "a", shared)
    for other in (_req(voice="amy"), _req(fmt="pcm_24000"), _req(voice_settings={"speed": 1.1}),
                  _req(options={"seed": 3}), _req(provider="elevenlabs")):
        assert digest(other, "a", shared) != digest(_req(), "a", shared)


def test_every_voice_is_namespaced_by_tenant_unless_the_operator_shares_catalogue_voices() -> None:
    custom = _req(provider="elevenlabs", voice="my-clone")
    listed = frozenset({"my-clone"})
    # Default (no sharing): even a catalogue voice's entry belongs to one tenant (no timing oracle).
    assert digest(custom, "tenant-a", None) != digest(custom, "tenant-b", None)
    assert digest(_req(), "tenant-a", None) != digest(_req(), "tenant-b", None)
    # Opted in (CACHE_SHARE_ACROSS_TENANTS): catalogue voices are shared, a tenant's own voice never.
    assert digest(custom, "tenant-a", frozenset()) != digest(custom, "tenant-b", frozenset())
    assert digest(custom, "tenant-a", listed) == digest(custom, "tenant-b", listed)
    assert digest(_req(), "tenant-a", frozenset()) == digest(_req(), "tenant-b", frozenset())


def _ctx(text: str) -> ContextRequest:
    return _req(text)


def _key(cache: PhraseCache, request: ContextRequest) -> str:
    return cache.key_of(request, "")


async def _books(r: aioredis.Redis) -> tuple[int, int, int, list[bytes]]:
    sizes = {k: int(v) for k, v in (await r.hgetall(keys.CACHE_SIZES)).items()}
    present = [d for d in await r.zrange(keys.CACHE_INDEX, 0, -1) if await r.exists(keys.cache_entry(d.decode()))]
    return int(await r.get(keys.CACHE_BYTES) or 0), sum(sizes.values()), len(sizes), present


async def test_eviction_keeps_the_total_under_the_cap_and_drops_the_least_recently_used(redis_url: str) -> None:
    cap = 45_000  # five entries of ~8 KB
    settings = fast_settings(redis_url, cache_enabled=True, cache_max_bytes=cap, cache_max_entry_bytes=cap)
    r = aioredis.Redis.from_url(redis_url)
    cache = PhraseCache(r, settings)
    try:
        chunk = [(b"\x01" * 4000, None), (b"\x02" * 4000, {"chars": ["a"], "charStartTimesMs": [0],
                                                            "charDurationsMs": [5]})]
        ctxs = [_ctx(f"Phrase number {i}.") for i in range(4)]
        for ctx in ctxs:
            assert await cache.store(_key(cache, ctx), chunk, "pcm_16000")
            await asyncio.sleep(0.002)  # distinct last-use scores
        # Touch the oldest: it becomes the most recently used and survives the next evictions.
        assert await cache.lookup(ctxs[0], "") == Hit(chunk)
        for i in range(4, 7):  # the fifth fits; the sixth and seventh each evict one
            ctx = _ctx(f"Phrase number {i}.")
            assert await cache.store(_key(cache, ctx), chunk, "pcm_16000")
            await asyncio.sleep(0.002)
        total, summed, count, present = await _books(r)
        assert total == summed <= cap and count == len(present)
        assert _key(cache, ctxs[0]).encode() in present
        assert _key(cache, ctxs[1]).encode() not in present  # least recently used went first
        assert isinstance(await cache.lookup(ctxs[1], ""), Recorder)  # evicted: a miss

        # Many gateways storing at once: still under the cap, books still balanced.
        many = [_ctx(f"Concurrent phrase {i}.") for i in range(60)]
        await asyncio.gather(*(cache.store(_key(cache, c), chunk, "pcm_16000") for c in many))
        total, summed, count, present = await _books(r)
        assert total == summed <= cap and count == len(present) > 0
        # An utterance bigger than the whole cache is simply not stored.
        huge = _ctx("Too big.")
        assert not await cache.store(_key(cache, huge), [(b"\x00" * (cap + 1), None)], "pcm_16000")
    finally:
        await r.aclose()


async def test_entries_expire_and_leave_the_books(redis_url: str) -> None:
    settings = fast_settings(redis_url, cache_enabled=True, cache_ttl_s=0.3)
    r = aioredis.Redis.from_url(redis_url)
    cache = PhraseCache(r, settings)
    try:
        old = _ctx("Soon gone.")
        assert await cache.store(_key(cache, old), [(b"\x01" * 100, None)], "pcm_16000")
        assert isinstance(await cache.lookup(old, ""), Hit)
        await asyncio.sleep(0.4)
        assert isinstance(await cache.lookup(old, ""), Recorder)  # a miss hands out a recorder
        new = _ctx("Fresh.")
        assert await cache.store(_key(cache, new), [(b"\x02" * 50, None)], "pcm_16000")
        total, summed, count, present = await _books(r)
        assert (count, total) == (1, summed) and present == [_key(cache, new).encode()]
    finally:
        await r.aclose()


@pytest.mark.parametrize("text,cacheable", [("Whole.", True), ("   ", False)])
def test_only_whole_non_empty_opted_in_utterances_are_cacheable(text: str, cacheable: bool) -> None:
    assert PhraseCache.cacheable(_ctx(text)) is cacheable
    assert not PhraseCache.cacheable(_req(text, use_cache=False))
    streamed = ContextRequest(context_id="c", voice_id="joe", provider="local", model_id="",
                              fmt=parse_format("pcm_16000"), text=text, input_closed=False)
    assert not PhraseCache.cacheable(streamed)
