"""Rate and concurrent-context limits per key: the documented errors, the session stays open, leases expire."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from shared import keys
from tests.gateway.tenancy_support import tenancy_stack
from tests.support.stack import NativeClient


async def test_rate_limit_is_an_error_event_and_the_session_stays_open(redis_url: str) -> None:
    async with tenancy_stack(redis_url) as s:
        created = await s.create_key("rate", quota_chars=None, max_contexts=None, rate_per_minute=3)
        async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": created["key"]}) as c:
            # Aligned to a fresh minute window would be kinder, but the limit must hold anywhere in it.
            for i in range(3):
                res = await c.speak(f"ok{i}", "Hi.", format="pcm_16000", timeout=60)
                assert res.final is not None, res.error
            await c.send(type="start", context_id="over", text="Hi.", end=True)
            await c.pump_until(lambda c: c.ended("over"), timeout=10)
            err = c.result("over").error
            assert err is not None and err["code"] == "rate_limited" and err["retryable"] is True
            assert 1 <= err["details"]["retry_after_s"] <= 60
            await c.send(type="ping", id="still-here")
            await c.pump_until(lambda c: any(e.get("id") == "still-here" for e in c.other), timeout=5)
            assert not c.ws.closed
        # Another key is unaffected.
        other = await s.create_key("other", quota_chars=None, max_contexts=None, rate_per_minute=3)
        async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": other["key"]}) as c:
            res = await c.speak("fine", "Hi.", format="pcm_16000", timeout=60)
            assert res.final is not None, res.error


async def test_concurrent_context_limit_spans_sessions_and_frees_on_end(redis_url: str) -> None:
    async with tenancy_stack(redis_url) as s:
        created = await s.create_key("conc", quota_chars=None, max_contexts=2, rate_per_minute=None)
        headers = {"xi-api-key": created["key"]}
        async with NativeClient.connect(s.base, s.http, headers=headers) as a, \
                NativeClient.connect(s.base, s.http, headers=headers) as b:
            # Streamed contexts stay live until ended.
            await a.send(type="start", context_id="a1")
            await b.send(type="start", context_id="b1")
            await a.pump_until(lambda c: c.result("a1").started is not None, timeout=10)
            await b.pump_until(lambda c: c.result("b1").started is not None, timeout=10)
            await b.send(type="start", context_id="b2")
            await b.pump_until(lambda c: c.ended("b2"), timeout=10)
            err = b.result("b2").error
            assert err is not None and err["code"] == "too_many_contexts"
            assert err["details"]["scope"] == "key" and err["details"]["retry_after_s"] >= 1
            assert not b.ws.closed
            # Ending one frees its slot (settling is in the background: allow it a moment).
            await a.send(type="cancel", context_id="a1")
            await a.pump_until(lambda c: c.ended("a1"), timeout=10)
            for attempt in range(50):
                cid = f"b3-{attempt}"
                await b.send(type="start", context_id=cid)
                await b.pump_until(lambda c, cid=cid: c.result(cid).started is not None or c.ended(cid), timeout=10)
                if b.result(cid).started is not None:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError(f"the slot was never freed: {b.result(cid).error}")


async def test_a_crashed_gateways_slots_expire_while_live_ones_are_refreshed(redis_url: str) -> None:
    async with tenancy_stack(redis_url, context_lease_s=3.0) as s:
        created = await s.create_key("lease", quota_chars=None, max_contexts=2, rate_per_minute=None)
        r = aioredis.Redis.from_url(redis_url)
        try:
            # A gateway that died mid-context left a slot behind whose lease nobody refreshes.
            await r.zadd(keys.key_active_contexts(created["id"]), {"dead-gateway:s:c:0": time.time() + 1.0})
            async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": created["key"]}) as c:
                await c.send(type="start", context_id="live")
                await c.pump_until(lambda c: c.result("live").started is not None, timeout=10)
                await c.send(type="start", context_id="blocked")
                await c.pump_until(lambda c: c.ended("blocked"), timeout=10)
                assert c.result("blocked").error["code"] == "too_many_contexts"
                # Past both the dead lease and several refresh periods of the live one.
                await asyncio.sleep(4.5)
                await c.send(type="start", context_id="second")
                await c.pump_until(lambda c: c.result("second").started is not None or c.ended("second"),
                                   timeout=10)
                assert c.result("second").started is not None, c.result("second").error
                # The live context kept its slot through the refreshes: a third is refused.
                await c.send(type="start", context_id="third")
                await c.pump_until(lambda c: c.ended("third"), timeout=10)
                assert c.result("third").error["code"] == "too_many_contexts"
            members = await r.zrange(keys.key_active_contexts(created["id"]), 0, -1)
            assert b"dead-gateway:s:c:0" not in members
        finally:
            await r.aclose()


async def test_limits_changed_by_the_admin_apply_to_the_next_context(redis_url: str) -> None:
    async with tenancy_stack(redis_url) as s:
        created = await s.create_key("edit", quota_chars=None, max_contexts=None, rate_per_minute=None)
        async with NativeClient.connect(s.base, s.http, headers={"xi-api-key": created["key"]}) as c:
            status, body = await s.admin("PATCH", f"/admin/keys/{created['id']}", json={"quota_chars": 2})
            assert status == 200 and body["quota_chars_per_day"] == 2
            await c.send(type="start", context_id="big", text="Too long.", end=True)
            await c.pump_until(lambda c: c.ended("big"), timeout=10)
            assert c.result("big").error["code"] == "quota_exceeded"
        status, usage = await s.admin("GET", f"/admin/keys/{created['id']}/usage")
        assert status == 200 and usage["days"][0]["rejected_quota_exceeded"] == 1
        status, body = await s.admin("GET", "/admin/keys/key_missing/usage")
        assert status == 404 and body["code"] == "not_found"
