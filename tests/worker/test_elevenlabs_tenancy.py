"""Per-tenant use of the account's upstream permits (issue 12, item 1), against real Redis and the emulator.

A context holds a permit only while it has something to synthesize: none before its first text, none
while it idles on its socket; and when tenants compete, each gets its fair share before anyone more.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from emulator.runner import RunningEmulator
from worker.providers.base import SynthesisRequest
from worker.providers.elevenlabs import ElevenLabsProvider
from worker.providers.elevenlabs.context import UpstreamContext
from worker.upstream_permits import AccountLimit

from shared import keys
from shared.errors import InputTimeout
from shared.redis_client import create_redis
from tests.support.timing import LOAD_MARGIN_S
from tests.worker.elevenlabs_fixtures import (
    account_of,
    collect,
    emulator,
    held,
    placed,
    provider,
    request,
    until,
)


def worker(emu: RunningEmulator, redis_url: str,
           **settings: Any) -> contextlib.AbstractAsyncContextManager[ElevenLabsProvider]:
    """A provider with the account-wide limit in Redis (one permit unless told)."""
    base: dict[str, Any] = {"upstream_concurrency": 1, "upstream_slot_wait_s": 10.0, "pool_keepalive_s": 0.4}
    return provider(emu, redis_url, **{**base, **settings})


def tenant_request(tenant: str) -> SynthesisRequest:
    """A request of client key ``tenant``."""
    r = request()
    return SynthesisRequest(key=r.key, voice_id=r.voice_id, model_id="", output_format=r.output_format,
                            tenant=tenant)


async def leases(redis_url: str, emu: RunningEmulator) -> int:
    """Permits held account-wide."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        return int(await r.zcard(keys.upstream_leases(account_of(emu))))
    finally:
        await r.aclose()


async def test_contexts_without_text_hold_nothing_and_time_out(redis_url: str) -> None:
    async with emulator() as emu, worker(emu, redis_url, upstream_text_wait_s=1.0) as p:
        idle = [await p.open_stream(tenant_request("key_a")) for _ in range(10)]
        assert p.status()["unplaced_contexts"] == 10 and p.status()["live_contexts"] == 0
        assert await leases(redis_url, emu) == 0
        # Another tenant speaks at once with the account's only permit.
        b = await p.open_stream(tenant_request("key_b"))
        await b.send_text("Tenant B speaks. ", flush=True)
        await b.end_input()
        out = await collect(b)
        assert out.error is None and out.text() == "Tenant B speaks. "
        # Blank text is not text: the idle ones still wait, then end with the typed error.
        await idle[0].send_text("   ")
        t0 = time.monotonic()
        outs = await asyncio.gather(*(collect(s) for s in idle))
        assert all(isinstance(o.error, InputTimeout) and o.error.code == "input_timeout" for o in outs)
        assert not outs[0].error.retryable  # type: ignore[union-attr]
        assert time.monotonic() - t0 < 1.0 + LOAD_MARGIN_S  # UPSTREAM_TEXT_WAIT_S from their opening
        assert p.status()["unplaced_contexts"] == 0
        assert emu.stats.contexts_opened == 1  # the upstream never heard of the idle ones
        # One that ends without any text finishes at once, upstream untouched.
        empty = await p.open_stream(tenant_request("key_a"))
        await empty.end_input()
        assert (await collect(empty)).error is None and emu.stats.contexts_opened == 1


async def test_an_idle_context_gives_its_permit_back_and_regains_it_for_more_text(redis_url: str) -> None:
    async with emulator() as emu, worker(emu, redis_url, upstream_idle_release_s=0.5) as p:
        a = await p.open_stream(tenant_request("key_a"))
        await a.send_text("First part. ", flush=True)
        assert isinstance(a, UpstreamContext)
        await placed(a)
        got: list[bytes] = []

        async def listen() -> None:
            async for chunk in a:
                got.append(chunk.audio)

        listener = asyncio.create_task(listen())
        await until(lambda: bool(got), 5.0)

        async def a_dormant() -> bool:
            return a.dormant and await leases(redis_url, emu) == 0

        await until(a_dormant, 5.0)  # quiet for 0.5 s: the permit went back, the socket slot stayed
        sock = a.socket
        assert sock is not None and a.id in sock.contexts
        # Tenant B takes the account's only permit meanwhile; A's next text waits for it.
        b = await held(p, tenant_request("key_b"), text="Tenant B holds. ")
        await a.send_text("Second part. ", flush=True)
        await a.end_input()
        await asyncio.sleep(0.3)
        assert a.dormant and a.placing is not None  # held back: the account is at its limit
        await b.cancel()
        await asyncio.wait_for(listener, 10.0)
        from emulator.synth import decode_text
        assert decode_text(b"".join(got), 24000) == "First part. Second part. "
        assert a.socket is None and a.attempts == 1  # same socket, same upstream context, finished
        await until(lambda: _leases_zero(redis_url, emu), 5.0)


async def _leases_zero(redis_url: str, emu: RunningEmulator) -> bool:
    return await leases(redis_url, emu) == 0


@contextlib.asynccontextmanager
async def account_limit(redis_url: str, account: str, limit: int) -> AsyncIterator[AccountLimit]:
    """A started account-wide permit pool in Redis on its own client; closed on exit."""
    client = create_redis(redis_url)
    acct = AccountLimit(client, account=account, limit=limit, lease_s=30.0)
    await acct.start()
    try:
        yield acct
    finally:
        await acct.close()
        await client.aclose()


async def test_fair_share_serves_a_new_tenant_before_a_greedy_ones_queue(redis_url: str) -> None:
    async with account_limit(redis_url, "test:fair", 4) as acct:
        for i in range(4):
            await acct.acquire(f"a{i}", time.monotonic() + 1, tenant="key_a")
        order: list[str] = []

        def served(n: int) -> Callable[[], bool]:
            return lambda: len(order) == n

        async def wait(key: str, tenant: str) -> None:
            await acct.acquire(key, time.monotonic() + 20, tenant=tenant)
            order.append(key)

        tasks = [asyncio.create_task(wait("a4", "key_a")), asyncio.create_task(wait("a5", "key_a"))]
        await asyncio.sleep(0.2)
        tasks += [asyncio.create_task(wait("b0", "key_b")), asyncio.create_task(wait("b1", "key_b"))]
        tasks.append(asyncio.create_task(wait("c0", "key_c")))
        await asyncio.sleep(0.2)
        assert order == []
        # Shares: 4 permits / 3 tenants = 1 each. A holds 4, so B and C go first despite arriving later.
        for k in range(2):
            acct.release(f"a{k}")
            await until(served(k + 1), 3.0 + LOAD_MARGIN_S)
        assert order == ["b0", "c0"]
        # A holds 1, B 1, C 1: every waiting tenant has its share, so the next permit goes in line order.
        acct.release("a2")
        await until(served(3), 3.0 + LOAD_MARGIN_S)
        assert order[2] == "a4"
        for key in ("a3", "a4", "b0", "c0"):
            acct.release(key)
        await asyncio.wait_for(asyncio.gather(*tasks), 5.0)
        assert sorted(order) == ["a4", "a5", "b0", "b1", "c0"]
        for key in order:
            acct.release(key)


async def test_a_lone_tenant_may_use_every_free_permit(redis_url: str) -> None:
    # Fair share binds only while others wait: alone, a tenant takes every permit.
    async with account_limit(redis_url, "test:lone", 3) as acct:
        for i in range(3):
            await acct.acquire(f"k{i}", time.monotonic() + 0.5, tenant="key_a")
        assert all(acct.held(f"k{i}") for i in range(3))
