"""Usage metering end to end: finals carry it, Redis counts it per key and day, Prometheus sums it.

Real gateway, real arq worker, the ElevenLabs emulator (a paid upstream as far as the gateway knows)
or the local voice, a real Redis; keys enforced, so every number is attributed to a real key.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisError

from shared import keys
from tests.compat.conftest import EL_VOICE, Stack, el_stack, local_stack
from tests.compat.elclient import ElClient
from tests.gateway.tenancy_support import ADMIN, TOKEN_SECRET
from tests.support.stack import NativeClient

PHRASE = "Your order has shipped and arrives on Tuesday."
BYTES_PER_SECOND_16K = 16000 * 2
AUTH = {"auth_disabled": False, "admin_token": ADMIN, "token_secret": TOKEN_SECRET}


async def _admin(s: Stack, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with s.http.request(method, s.base + path, headers={"Authorization": f"Bearer {ADMIN}"}, **kw) as r:
        return r.status, await r.json(content_type=None)


async def _key(s: Stack, name: str) -> dict[str, Any]:
    status, body = await _admin(s, "POST", "/admin/keys", json={"name": name, "quota_chars": None,
                                                               "max_contexts": None, "rate_per_minute": None})
    assert status == 201, body
    return body


async def _get(s: Stack, path: str, key: str | None) -> tuple[int, Any]:
    headers = {"xi-api-key": key} if key else {}
    async with s.http.get(s.base + path, headers=headers) as r:
        return r.status, await r.json()


async def _until(read: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    """Poll ``read`` until ``ok`` (usage is written in the background, after the final went out)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def _usage_metrics(s: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every ``tts_usage_*`` sample on /metrics, keyed by (name, labels)."""
    async with s.http.get(s.base + "/metrics") as r:
        text = await r.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("tts_usage_") and sample.name.endswith("_total"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def _wait_cached(redis_url: str, n: int = 1) -> None:
    r = aioredis.Redis.from_url(redis_url)
    try:
        await _until(lambda: r.zcard(keys.CACHE_INDEX), lambda c: c >= n)
    finally:
        await r.aclose()


@contextlib.asynccontextmanager
async def _el(redis_url: str, **overrides: Any) -> AsyncIterator[Stack]:
    async with el_stack(redis_url, **{**AUTH, **overrides}) as s:
        yield s


async def test_native_finals_redis_and_prometheus_agree_on_billed_cached_and_audio(redis_url: str) -> None:
    async with _el(redis_url, cache_enabled=True) as s:
        a, b = await _key(s, "a"), await _key(s, "b")
        before = await _usage_metrics(s)
        async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": a["key"]}) as c:
            miss = await c.speak("m", PHRASE, voice=EL_VOICE, format="pcm_16000", timeout=60)
            assert miss.final is not None, miss.error
            await _wait_cached(redis_url)
            hit = await c.speak("h", PHRASE, voice=EL_VOICE, format="pcm_16000", timeout=30)
            assert hit.final is not None, hit.error
        seconds = len(miss.audio) / BYTES_PER_SECOND_16K
        assert seconds > 1.0
        # The miss went to the (emulated) paid upstream: every character billed, none cached.
        assert miss.final["cached"] is False
        assert miss.final["billed_chars"] == miss.final["synthesized_chars"] == len(PHRASE)
        assert miss.final["cached_chars"] == 0
        assert abs(miss.final["audio_seconds"] - seconds) < 0.002
        # The hit paid nobody: every character cached, none billed; the same audio delivered.
        assert hit.final["cached"] is True
        assert hit.final["billed_chars"] == hit.final["synthesized_chars"] == 0
        assert hit.final["cached_chars"] == len(PHRASE)
        assert abs(hit.final["audio_seconds"] - len(hit.audio) / BYTES_PER_SECOND_16K) < 0.002

        # The key's own usage, per day and in total.
        mine = await _until(lambda: _get(s, "/v1/usage", a["key"]),
                            lambda r: r[1].get("total", {}).get("cached_chars", 0) >= len(PHRASE))
        status, body = mine
        assert status == 200 and body["key_id"] == a["id"]
        today = body["days"][0]
        assert today["day"] == body["to"] and len(body["days"]) == 7
        for row in (today, body["total"]):
            assert row["billed_chars"] == row["synthesized_chars"] == row["cached_chars"] == len(PHRASE), row
            assert abs(row["audio_seconds"] - 2 * seconds) < 0.01
            assert row["characters"] == len(PHRASE)  # the quota charges the miss only
        # An explicit range, and one that holds no usage.
        day = today["day"]
        status, one = await _get(s, f"/v1/usage?from={day}&to={day}", a["key"])
        assert status == 200 and [d["day"] for d in one["days"]] == [day] and one["total"] == body["total"]
        status, empty = await _get(s, "/v1/usage?from=2020-01-01&to=2020-01-31", a["key"])
        assert status == 200 and len(empty["days"]) == 31 and empty["total"]["billed_chars"] == 0

        # Only one's own: another key's id is refused, and b reads its own (empty) usage.
        status, err = await _get(s, f"/v1/usage?key_id={b['id']}", a["key"])
        assert status == 403 and err["code"] == "forbidden"
        status, theirs = await _get(s, "/v1/usage", b["key"])
        assert status == 200 and theirs["key_id"] == b["id"] and theirs["total"]["cached_chars"] == 0
        status, err = await _get(s, "/v1/usage", None)
        assert status == 401
        for bad in ("from=2026-13-01", "from=yesterday", "from=2026-01-02&to=2026-01-01",
                    "from=2020-01-01&to=2026-01-01", "days=0", "days=x"):
            status, err = await _get(s, f"/v1/usage?{bad}", a["key"])
            assert status == 422 and err["code"] == "invalid_request", bad

        # The operator sees every key: one key's days, and the day's summary across keys.
        status, op = await _admin(s, "GET", f"/admin/usage?key_id={a['id']}&from={day}&to={day}")
        assert status == 200 and op["total"] == one["total"]
        status, summary = await _admin(s, "GET", f"/admin/usage?day={day}")
        assert status == 200 and summary["keys_with_usage"] == 1
        assert summary["total"]["billed_chars"] == summary["total"]["cached_chars"] == len(PHRASE)
        assert summary["total"]["contexts"] == 2
        assert [k["key_id"] for k in summary["keys"]] == [a["id"]]
        status, _ = await _get(s, "/admin/usage", a["key"])  # a client key opens no admin route
        assert status == 401
        status, err = await _admin(s, "GET", "/admin/usage?key_id=tts:quota:x")
        assert status == 422
        # Per-tenant series are off unless the operator turns them on.
        async with s.http.get(s.base + "/metrics/tenants", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 404

        # Prometheus: grown by exactly these two contexts, summed by provider and model, no key label.
        after = await _usage_metrics(s)
        labels = {"provider": "elevenlabs", "model": s.settings.elevenlabs_model}
        assert _delta(before, after, "tts_usage_billed_characters_total", **labels) == len(PHRASE)
        assert _delta(before, after, "tts_usage_synthesized_characters_total", **labels) == len(PHRASE)
        assert _delta(before, after, "tts_usage_cached_characters_total", **labels) == len(PHRASE)
        assert abs(_delta(before, after, "tts_usage_audio_seconds_total", **labels) - 2 * seconds) < 0.01
        assert {name for name, _ in after} >= {"tts_usage_billed_characters_total", "tts_usage_audio_seconds_total"}
        assert all(dict(lbl).keys() <= {"provider", "model"} for _, lbl in after), after


async def test_elevenlabs_socket_finals_carry_usage_and_an_immediate_close_too(redis_url: str) -> None:
    async with _el(redis_url) as s:
        a = await _key(s, "a")
        async with ElClient.connect(s.base, s.http, voice=EL_VOICE, headers={"xi-api-key": a["key"]},
                                    output_format="pcm_16000") as c:
            await c.send(text=" ", context_id="x")
            await c.send(text="Hello there. ", context_id="x", flush=True)
            await c.send(text="And more words.", context_id="x")
            await c.send(context_id="x", close_context=True)
            await c.pump_until(lambda c: c.final("x"), timeout=60)
            # Barge-in: audio flowing, then an immediate close; its isFinal still says what it cost.
            long = "This sentence is interrupted long before its end. " * 4
            await c.send(text=" ", context_id="y")
            await c.send(text=long, context_id="y", flush=True)
            await c.pump_until(lambda c: bool(c.get("y").audio), timeout=60)
            await c.send(context_id="y", close_context=True, immediate=True)
            await c.pump_until(lambda c: c.final("y"), timeout=30)
        finals = {f["contextId"]: f for f in c.frames if f.get("isFinal")}
        x = finals["x"]
        assert x["billedChars"] == x["synthesizedChars"] == len("Hello there. And more words.") and x["cachedChars"] == 0
        assert abs(x["audioSeconds"] - len(c.get("x").audio) / BYTES_PER_SECOND_16K) < 0.002
        # The standard fields are untouched (clients parse these).
        assert x["audio"] is None and x["isFinal"] is True and x["alignment"] is None
        y = finals["y"]
        assert y["billedChars"] == len(long) and y["cachedChars"] == 0
        # Counted as handed to the socket: a chunk queued behind the cancel may never have gone out.
        assert y["audioSeconds"] >= len(c.get("y").audio) / BYTES_PER_SECOND_16K - 0.002 > 0
        _, body = await _until(lambda: _get(s, "/v1/usage", a["key"]),
                                    lambda r: r[1]["total"]["billed_chars"] >= x["billedChars"] + len(long))
        assert body["total"]["billed_chars"] == x["billedChars"] + len(long)


async def test_the_local_voice_bills_nothing_upstream_but_counts_what_it_synthesized(redis_url: str) -> None:
    async with local_stack(redis_url, **AUTH) as s:
        a = await _key(s, "a")
        before = await _usage_metrics(s)
        async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": a["key"]}) as c:
            res = await c.speak("l", PHRASE, format="pcm_16000", timeout=60)
        assert res.final is not None, res.error
        assert res.final["billed_chars"] == 0 and res.final["synthesized_chars"] == len(PHRASE)
        assert abs(res.final["audio_seconds"] - len(res.audio) / BYTES_PER_SECOND_16K) < 0.002
        _, body = await _until(lambda: _get(s, "/v1/usage", a["key"]),
                               lambda r: r[1]["total"]["synthesized_chars"] > 0)
        assert body["total"]["billed_chars"] == 0 and body["total"]["synthesized_chars"] == len(PHRASE)
        after = await _usage_metrics(s)
        labels = {"provider": "local", "model": "piper"}
        assert _delta(before, after, "tts_usage_billed_characters_total", **labels) == 0
        assert _delta(before, after, "tts_usage_synthesized_characters_total", **labels) == len(PHRASE)


async def test_per_tenant_exporter_is_opt_in_admin_only_and_bounded_to_the_top_keys(redis_url: str) -> None:
    async with _el(redis_url, metrics_per_tenant=True, metrics_tenants_top=1) as s:
        busy, quiet = await _key(s, "busy"), await _key(s, "quiet")
        for key, text in ((busy["key"], PHRASE + " " + PHRASE), (quiet["key"], "Hi.")):
            async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": key}) as c:
                res = await c.speak("t", text, voice=EL_VOICE, format="pcm_16000", timeout=60)
                assert res.final is not None, res.error
        async with s.http.get(s.base + "/metrics/tenants") as r:
            assert r.status == 401  # who the tenants are is the operator's business

        async def scrape() -> dict[str, dict[str, float]]:
            async with s.http.get(s.base + "/metrics/tenants", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                assert r.status == 200
                text = await r.text()
            out: dict[str, dict[str, float]] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    out.setdefault(sample.name, {})[sample.labels.get("key_id", "")] = sample.value
            return out

        series = await _until(scrape, lambda m: m.get("tts_tenant_keys_with_usage", {}).get("") == 2)
        assert series["tts_tenant_keys_with_usage"][""] == 2
        # Bounded to the top key: the busy one only.
        assert series["tts_tenant_billed_characters_total"] == {busy["id"]: len(PHRASE) * 2 + 1}
        assert set(series["tts_tenant_audio_seconds_total"]) == {busy["id"]}


async def test_contexts_ending_together_share_one_usage_write(redis_url: str) -> None:
    """Endings within the writer's linger go out as one pipeline: the counters add up, the commands do not."""
    from gateway.metering import FLUSH_LINGER_S, UsageWriter

    r = aioredis.Redis.from_url(redis_url)
    writer = UsageWriter(r)
    task = asyncio.create_task(writer.run_forever())
    day, one = "2026-12-06", {"billed_chars": 10, "synthesized_chars": 10, "cached_chars": 0, "audio_ms": 1500}

    async def hincrbys() -> int:
        stats = await r.info("commandstats")
        return int(stats.get("cmdstat_hincrby", {}).get("calls", 0))

    try:
        before = await hincrbys()
        for i in range(20):  # twenty contexts of one key ending over a few milliseconds
            writer.add("key_a", day, one)
            if i % 5 == 4:
                await asyncio.sleep(0)  # the writer runs here: only its linger keeps it from writing
        totals = await _until(lambda: r.hgetall(keys.usage_day_total(day)),
                              lambda t: int(t.get(b"contexts", 0)) == 20, timeout=5 + FLUSH_LINGER_S)
        assert int(totals[b"audio_ms"]) == 20 * 1500
        assert int(await r.hget(keys.key_usage("key_a", day), "billed_chars")) == 200
        # One write: three nonzero counters for the key and for the day, plus the day's contexts.
        assert await hincrbys() - before == 7
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await r.aclose()


async def test_usage_ended_while_redis_is_down_is_written_once_it_is_back() -> None:
    """The writer keeps (and merges) what it could not write, and writes it exactly once after a restart."""
    from gateway.metering import UsageWriter

    from shared.redis_server import RedisServer, free_port

    server = RedisServer(port=free_port(), appendonly=True).start()
    r = aioredis.Redis.from_url(server.url, socket_timeout=1.0)
    writer = UsageWriter(r)
    task = asyncio.create_task(writer.run_forever())
    day, one = "2026-12-04", {"billed_chars": 10, "synthesized_chars": 10, "cached_chars": 0, "audio_ms": 1500}

    async def billed() -> int:
        try:
            return int(await r.hget(keys.key_usage("key_a", day), "billed_chars") or 0)
        except (OSError, RedisError):
            return -1

    try:
        writer.add("key_a", day, one)
        assert await _until(billed, lambda v: v == 10) == 10
        server.stop()
        writer.add("key_a", day, one)
        writer.add("key_a", day, {**one, "billed_chars": 5})
        await asyncio.sleep(1.5)  # at least one failed round: the increments stay pending, merged
        server.start()
        assert await _until(billed, lambda v: v == 25) == 25
        await asyncio.sleep(1.2)  # a retry round later: written once, not again
        assert await billed() == 25
        total = await r.hgetall(keys.usage_day_total(day))
        assert int(total[b"contexts"]) == 3 and int(total[b"audio_ms"]) == 4500
        assert await r.zscore(keys.usage_day_keys(day), "key_a") == 3 * 10  # synthesized + cached characters
        assert 0 < await r.ttl(keys.key_usage("key_a", day)) <= keys.USAGE_TTL_S
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await r.aclose()
        server.stop()
        server.cleanup()


async def test_http_endpoints_have_no_final_but_their_usage_is_counted(redis_url: str) -> None:
    async with _el(redis_url) as s:
        a = await _key(s, "a")
        el_text, oa_text = "Streamed over plain HTTP.", "And one for the OpenAI route."
        async with s.http.post(f"{s.base}/v1/text-to-speech/{EL_VOICE}/stream?output_format=pcm_16000",
                               headers={"xi-api-key": a["key"]}, json={"text": el_text}) as r:
            assert r.status == 200
            el_audio = await r.read()
        async with s.http.post(f"{s.base}/v1/audio/speech", headers={"Authorization": f"Bearer {a['key']}"},
                               json={"model": "tts-1", "voice": EL_VOICE, "input": oa_text,
                                     "response_format": "pcm"}) as r:
            assert r.status == 200
            oa_audio = await r.read()
        both = len(el_text) + len(oa_text)
        _, body = await _until(lambda: _get(s, "/v1/usage", a["key"]),
                               lambda r: r[1]["total"]["billed_chars"] >= both)
        assert body["total"]["billed_chars"] == body["total"]["synthesized_chars"] == both
        # OpenAI's pcm is 24 kHz 16-bit mono.
        seconds = len(el_audio) / BYTES_PER_SECOND_16K + len(oa_audio) / (24000 * 2)
        assert abs(body["total"]["audio_seconds"] - seconds) < 0.01
