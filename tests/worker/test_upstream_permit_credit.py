"""Account permits on credit: taken before Redis answers while the account has permits to spare.

Real Redis (the session's private server); two ``AccountLimit`` instances stand for two workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from worker.providers.elevenlabs.context import UpstreamContext
from worker.upstream_permits import AccountLimit

from shared import keys
from shared.redis_client import create_redis
from tests.support.timing import LOAD_MARGIN_S
from tests.worker.elevenlabs_fixtures import collect, emulator, held, provider, request, speak

LIMIT = 10  # credit margin 2: on credit while at most 7 are held as last seen


def _credit(outcome: str) -> float:
    return REGISTRY.get_sample_value("tts_upstream_permit_credit_total",
                                     {"provider": "elevenlabs", "outcome": outcome}) or 0.0


async def _leases(r: aioredis.Redis, account: str) -> set[str]:
    return {m.decode() for m in await r.zrange(keys.upstream_leases(account), 0, -1)}


async def _until(check, timeout_s: float = 2.0 + LOAD_MARGIN_S) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _worker(redis_url: str, account: str, **options: Any) -> AsyncIterator[AccountLimit]:
    """One worker's side of ``account``: its own Redis client, started, closed after."""
    client = create_redis(redis_url)
    acct = AccountLimit(client, account=account, limit=LIMIT, lease_s=30.0, **options)
    await acct.start()
    try:
        yield acct
    finally:
        await acct.close()
        await client.aclose()


def _new_account() -> str:
    return f"test:credit:{uuid.uuid4().hex[:8]}"


async def test_a_permit_on_credit_does_not_wait_for_redis_and_is_confirmed_after(redis_url: str) -> None:
    account = _new_account()
    r = create_redis(redis_url)
    try:
        async with _worker(redis_url, account) as acct:
            await acct.acquire("first", time.monotonic() + 5)  # no view of the account yet: waits for Redis
            assert acct.holder("first") in await _leases(r, account)
            confirmed = _credit("confirmed")
            # Redis answers nobody for a while: a permit that waited for its grant would wait that long.
            await r.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            taking = asyncio.create_task(acct.acquire("second", time.monotonic() + 5))
            await asyncio.sleep(0.2)
            assert taking.done(), "a permit on credit waited for Redis"
            await taking
            assert acct.held("second")
            # Once Redis answers again the permit is registered as an ordinary lease.
            await _until(lambda: _has(r, account, acct.holder("second")))
            await _until(lambda: _counter_above("confirmed", confirmed))
            acct.release("second")
            await _until(lambda: _lacks(r, account, acct.holder("second")))
    finally:
        await r.aclose()


async def test_no_credit_once_the_spare_is_down_to_the_margin(redis_url: str) -> None:
    account = _new_account()
    r = create_redis(redis_url)
    try:
        async with _worker(redis_url, account) as acct:
            for i in range(LIMIT - acct.credit_margin):
                await acct.acquire(f"k{i}", time.monotonic() + 5)
            await _until(lambda: _count(r, account, LIMIT - acct.credit_margin))
            await acct.acquire("fresh-view", time.monotonic() + 5)  # a reply: the view is current
            await r.execute_command("CLIENT", "PAUSE", "600", "ALL")
            taking = asyncio.create_task(acct.acquire("tight", time.monotonic() + 5))
            await asyncio.sleep(0.2)
            assert not taking.done(), "took a permit on credit with only the margin to spare"
            await taking  # granted by Redis once it answers
            assert acct.holder("tight") in await _leases(r, account)
    finally:
        await r.aclose()


async def test_an_account_filled_meanwhile_leaves_the_permit_overdrawn_and_counted(redis_url: str) -> None:
    account = _new_account()
    r = create_redis(redis_url)
    try:
        async with _worker(redis_url, account) as mine, _worker(redis_url, account, credit=False) as other:
            await mine.acquire("seen", time.monotonic() + 5)  # this worker's view: 1 of 10 held
            # The other worker takes the rest (at once, in parallel) before this one hears of it.
            await asyncio.gather(*(other.acquire(f"o{i}", time.monotonic() + 5) for i in range(LIMIT - 1)))
            overdrawn = _credit("overdrawn")
            await mine.acquire("late", time.monotonic() + 5)  # on credit: the view still shows 9 spare
            assert mine.held("late")
            await _until(lambda: _counter_above("overdrawn", overdrawn))
            assert mine.held("late"), "an overdrawn permit is kept (its context is already upstream)"
            assert mine.account_leases == LIMIT  # what Redis said: full
            # No further credit on that view: the next caller waits in line like any other.
            with_deadline = asyncio.create_task(mine.acquire("after", time.monotonic() + 0.3))
            await asyncio.sleep(0.1)
            assert not with_deadline.done()
            mine.release("late")
            mine.release("seen")
            await with_deadline  # a permit came back: granted by Redis
            assert mine.holder("after") in await _leases(r, account)
    finally:
        await r.aclose()


async def test_a_release_racing_the_confirmation_leaves_no_lease(redis_url: str) -> None:
    account = _new_account()
    r = create_redis(redis_url)
    try:
        async with _worker(redis_url, account) as acct:
            await acct.acquire("first", time.monotonic() + 5)
            for i in range(20):
                await acct.acquire(f"brief{i}", time.monotonic() + 5)
                holder = acct.holder(f"brief{i}")
                acct.release(f"brief{i}")  # before its confirmation even left
                await _until(lambda h=holder: _lacks(r, account, h))  # type: ignore[misc]
            await asyncio.sleep(0.1)
            assert await _leases(r, account) == {acct.holder("first")}
    finally:
        await r.aclose()


async def _has(r: aioredis.Redis, account: str, holder: str) -> bool:
    return holder in await _leases(r, account)


async def _lacks(r: aioredis.Redis, account: str, holder: str) -> bool:
    return holder not in await _leases(r, account)


async def _count(r: aioredis.Redis, account: str, n: int) -> bool:
    return len(await _leases(r, account)) == n


async def _counter_above(outcome: str, before: float) -> bool:
    return _credit(outcome) > before


async def test_a_first_text_is_on_its_socket_when_send_text_returns(redis_url: str) -> None:
    """Free slot, permit on credit: placement happens inside send_text, with no task and no Redis call."""
    r = create_redis(redis_url)
    async with emulator() as emu, provider(emu, redis_url, upstream_concurrency=LIMIT) as p:
        first = await held(p)  # opens the key's socket and gives this worker a view of the account
        await speak(p, "Warm. ")  # a fresh reply (the release's) ...
        await held(p)  # ... and another: the view is current
        await r.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        stream = await p.open_stream(request())
        await stream.send_text("Placed at once. ", flush=True)
        assert isinstance(stream, UpstreamContext) and stream.socket is not None, "not placed inside send_text"
        await stream.end_input()
        out = await collect(stream)  # spoken once Redis answers the confirmation (and the rest) again
        assert out.error is None and out.text() == "Placed at once. "
        await first.cancel()
    await r.aclose()
