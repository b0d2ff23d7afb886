"""Account overload is refused, not spread (issue 18, item 3): real Redis permits, the emulator upstream.

When every account permit is taken and the line ahead is too long to clear within the caller's
wait (at the pace this worker's contexts give permits back), a new context hears ``upstream_busy``
at once instead of after ``UPSTREAM_SLOT_WAIT_S``; saturation shows in the status (and so in the
worker's /readyz) and in ``tts_upstream_saturated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from emulator.runner import RunningEmulator
from prometheus_client import REGISTRY
from worker.providers.elevenlabs import ElevenLabsProvider

from tests.worker.elevenlabs_fixtures import Outcome, emulator, held, provider, speak

WAIT_S = 4.0


def worker(emu: RunningEmulator, redis_url: str,
           **settings: Any) -> contextlib.AbstractAsyncContextManager[ElevenLabsProvider]:
    """A provider with the account-wide permits in Redis."""
    return provider(emu, redis_url, **settings)


def _saturated_gauge() -> float | None:
    return REGISTRY.get_sample_value("tts_upstream_saturated", {"provider": "elevenlabs"})


async def test_a_wait_that_could_not_end_in_time_is_refused_at_once(redis_url: str) -> None:
    async with emulator() as emu, \
            worker(emu, redis_url, upstream_concurrency=2, upstream_slot_wait_s=WAIT_S) as p:
        # Teach the worker how long its contexts hold a permit: two held for a second, then closed.
        warm = [await held(p), await held(p)]
        await asyncio.sleep(1.0)
        for stream in warm:
            await stream.cancel()
        # The releases go to Redis in the background: the account is seen unsaturated once they are
        # acknowledged (the contexts themselves are gone at once).
        deadline = time.monotonic() + 5.0
        while p.status()["live_contexts"] or p.status()["account"]["hold_s"] is None or p.status()["saturated"]:
            assert time.monotonic() < deadline, p.status()["account"]
            await asyncio.sleep(0.01)
        assert p.status()["account"]["hold_s"] >= 0.9

        # Both permits taken and kept: the account is saturated.
        holding = [await held(p), await held(p)]
        assert p.status()["saturated"] and _saturated_gauge() == 1.0

        # Fourteen newcomers at once: at ~0.5 s per freed permit, only the first several can be served
        # within the 4 s wait; the rest are told at once.
        async def newcomer(i: int) -> tuple[float, Outcome]:
            t0 = time.monotonic()
            out = await speak(p, f"Newcomer {i}. ")
            return time.monotonic() - t0, out

        tasks = [asyncio.create_task(newcomer(i)) for i in range(14)]
        await asyncio.sleep(1.0)
        for stream in holding:
            await stream.cancel()  # permits come back: the ones in line are served in turn
        results = await asyncio.gather(*tasks)

        refused = [(t, o) for t, o in results if o.error is not None]
        served = [(t, o) for t, o in results if o.error is None]
        print(f"\n{len(refused)} refused at once, {len(served)} served")
        assert refused and served
        for took, out in refused:
            assert out.error is not None and out.error.code == "upstream_busy" and out.error.retryable
            assert out.error.details["refused"] == "at_once" and out.error.details["scope"] == "account"
            assert out.error.details["expected_wait_s"] > WAIT_S - 1.0
            assert took < WAIT_S / 2  # not after the whole wait
        for i, (_took, out) in enumerate(served):
            assert out.text() != "" and out.error is None, i
        assert len(served) >= 5  # the line that could be served in time was

        deadline = time.monotonic() + 5.0
        while p.status()["saturated"]:
            assert time.monotonic() < deadline, "still saturated"
            await asyncio.sleep(0.01)
        assert _saturated_gauge() == 0.0


async def test_without_a_measured_pace_the_wait_is_the_bounded_one(redis_url: str) -> None:
    # A fresh worker has seen no permit come back: it cannot tell a hopeless wait, so it waits as before.
    async with emulator() as emu, \
            worker(emu, redis_url, upstream_concurrency=1, upstream_slot_wait_s=0.5) as p:
        keep = await held(p)
        t0 = time.monotonic()
        out = await speak(p, "Too many. ")
        assert out.error is not None and out.error.code == "upstream_busy"
        assert "refused" not in out.error.details
        assert time.monotonic() - t0 >= 0.45
        await keep.cancel()


async def test_the_saturated_gauge_follows_the_account_as_it_changes(redis_url: str) -> None:
    # The account's view (permits held account-wide, as Redis last answered) changes in the background,
    # after the pool's own events: the gauge must change with it, not at the pool's next tick.
    async with emulator() as emu, worker(emu, redis_url, upstream_concurrency=1, pool_keepalive_s=60.0) as p:
        keep = await held(p)
        assert p.status()["saturated"] and _saturated_gauge() == 1.0
        await keep.cancel()
        deadline = time.monotonic() + 5.0
        while p.status()["saturated"]:
            assert time.monotonic() < deadline, "still saturated"
            await asyncio.sleep(0.001)
        assert _saturated_gauge() == 0.0
