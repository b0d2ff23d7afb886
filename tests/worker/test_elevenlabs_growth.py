"""The pool grows ahead of demand (issue 16, item 3): no cold-pool penalty after a quiet spell.

Real Redis (account-wide permits, as a worker runs), the emulator on a real port with a 300 ms
handshake, and the pool's own metric for contexts placed on a socket still connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from emulator.runner import RunningEmulator
from prometheus_client import REGISTRY
from worker.providers.base import SynthesisStream
from worker.providers.elevenlabs import ElevenLabsProvider
from worker.providers.elevenlabs.demand import Demand
from worker.providers.elevenlabs.dialer import Dialer
from worker.providers.elevenlabs.options import SocketKey
from worker.providers.elevenlabs.upkeep import _share

from shared.redis_client import create_redis
from tests.worker.elevenlabs_fixtures import collect, el_settings, emulator, held, speak

# Sockets close after 3 s of silence upstream; the pool refreshes or retires idle ones after 1.5 s.
QUIET = {"upstream_inactivity_timeout_s": 3, "pool_keepalive_s": 0.5}


def waited_for_handshake() -> float:
    """Contexts placed on a socket still connecting, all providers of this process."""
    return REGISTRY.get_sample_value("tts_pool_context_waited_for_handshake_total", {"provider": "elevenlabs"}) or 0.0


@contextlib.asynccontextmanager
async def worker(emu: RunningEmulator, redis_url: str, **settings: Any) -> AsyncIterator[ElevenLabsProvider]:
    """A provider as a worker runs it: account-wide permits in Redis."""
    client = create_redis(redis_url)
    p = ElevenLabsProvider(el_settings(**settings), base_url=emu.http_url, redis=client)
    await p.start()
    try:
        yield p
    finally:
        await p.close()
        await client.aclose()


async def hold_many(p: ElevenLabsProvider, n: int) -> list[SynthesisStream]:
    """``n`` contexts holding a slot each, asked for at once."""
    return list(await asyncio.gather(*(held(p) for _ in range(n))))


async def release(streams: list[SynthesisStream]) -> None:
    """Cancel ``streams`` and wait for their ends (the slot frees at each final)."""
    for s in streams:
        await s.cancel()
    await asyncio.gather(*(collect(s) for s in streams))


def sockets(p: ElevenLabsProvider) -> int:
    """Sockets tracked, every state."""
    counts = p.status()["sockets"]
    return int(counts["open"] + counts["connecting"] + counts["draining"])


def lasting(p: ElevenLabsProvider) -> int:
    """Sockets that stay: neither draining nor being refreshed (an idle one's replacement counts instead)."""
    return sum(1 for s in p.status()["socket_list"] if s["state"] != "draining" and not s["refreshing"])


async def step_after_quiet(emu: RunningEmulator, p: ElevenLabsProvider) -> float:
    """Peak of 50, a quiet spell longer than the idle deadline, 5 contexts, then 45 more at once:
    how many of those 50 waited for a handshake."""
    await release(await hold_many(p, 50))
    await asyncio.sleep(3.5)  # two idle deadlines: without memory, the extra sockets are gone
    before = waited_for_handshake()
    base = await hold_many(p, 5)
    step = await hold_many(p, 45)
    waited = waited_for_handshake() - before
    await release(base + step)
    return waited


async def test_a_step_back_to_a_recent_peak_after_a_quiet_spell_waits_for_no_handshake(redis_url: str) -> None:
    async with emulator(connect_delay_ms=300, inactivity_timeout_default=3.0) as emu:
        async with worker(emu, redis_url, pool_max_sockets=16, upstream_concurrency=60, upstream_slot_wait_s=15.0,
                          pool_demand_window_s=60.0, **QUIET) as p:
            waited = await step_after_quiet(emu, p)
            growth = p.status()["growth"]
            assert growth["enabled"] and growth["keys"][0]["peak"] == 50
            assert sockets(p) <= 16
        assert waited == 0
        assert not emu.stats.close_codes_sent and not emu.stats.errors_sent
        assert emu.stats.max_active_contexts_per_socket <= 5

        # The same step without growth ahead (the former behaviour) pays for its handshakes: the
        # metric sees them.
        async with worker(emu, redis_url, pool_max_sockets=16, upstream_concurrency=60, upstream_slot_wait_s=15.0,
                          pool_pregrow=False, **QUIET) as p:
            waited_before = await step_after_quiet(emu, p)
        assert waited_before >= 30


async def test_surplus_sockets_close_once_the_peak_is_older_than_the_window(redis_url: str) -> None:
    async with emulator(connect_delay_ms=50, inactivity_timeout_default=3.0) as emu, \
            worker(emu, redis_url, pool_max_sockets=16, upstream_concurrency=60, pool_demand_window_s=2.0,
                   **QUIET) as p:
        await release(await hold_many(p, 40))
        await asyncio.sleep(0.5)
        assert sockets(p) >= 9  # 40 + 20 % spare = 48 slots: the peak is remembered
        deadline = time.monotonic() + 10.0
        while sockets(p) > 1:  # back to POOL_MIN_SOCKETS: window (2 s) + an idle deadline (1 s)
            assert time.monotonic() < deadline, p.status()["socket_list"]
            await asyncio.sleep(0.1)
        assert p.status()["growth"]["target_sockets"] == 0
        assert not emu.stats.close_codes_sent  # each closed by us at its idle deadline, none by the upstream


async def test_growth_stays_within_the_handshake_rate_and_the_concurrency_cap(redis_url: str) -> None:
    # The pool may dial 10/s (5 at once); the emulator admits 20/s (10 at once): a margin for a loaded box.
    # Keeping a peak of 20 warm with a 2 s idle close means refreshing sockets all the time.
    async with emulator(connect_delay_ms=50, inactivity_timeout_default=3.0, handshake_rate=20,
                        handshake_burst=10) as emu, \
            worker(emu, redis_url, pool_max_sockets=16, upstream_concurrency=20, upstream_slot_wait_s=15.0,
                   pool_handshake_rate=10.0, pool_handshake_burst=5, pool_demand_window_s=60.0, **QUIET) as p:
        peak = await hold_many(p, 20)
        # Every permit taken: no spare is worth a handshake (no context could use it).
        await asyncio.sleep(0.3)
        assert lasting(p) <= 4 + 1  # 4 full sockets, at most one more dialled as the last slot went
        await release(peak)
        opened: list[tuple[float, int]] = []
        high = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4.0:
            opened.append((time.monotonic(), emu.stats.ws_connections_opened))
            high = max(high, lasting(p))
            await asyncio.sleep(0.05)
        # 20 permits: at most 20 free slots are worth keeping (4 sockets), however high the spare.
        assert high <= 4 + 1
        for i, (t, n) in enumerate(opened):  # any 1 s: burst + rate, plus one for sampling
            later = [m for u, m in opened[i:] if u - t <= 1.0]
            assert later[-1] - n <= 5 + 10 + 1
        assert emu.stats.handshakes_refused == 0
        out = await speak(p, "Still served. ")
        assert out.error is None and out.text() == "Still served. "


def test_demand_remembers_the_window_peak_and_a_bounded_number_of_keys() -> None:
    key = SocketKey("v", "m", "pcm_24000", 20)
    d = Demand(window_s=6.0, trend_s=1.0, max_keys=3)
    d.observe(0.0, {key: 50})
    d.observe(0.5, {key: 5})
    assert d.peak(key) == 50 and d.forecast(key, 0.5, 1.0) == 5  # falling: no trend added
    d.observe(5.0, {key: 5})
    assert d.peak(key) == 50
    d.observe(7.0, {key: 5})
    assert d.peak(key) == 5  # the busy bucket is older than the window
    d.observe(7.2, {key: 10})
    assert d.forecast(key, 7.2, 1.0) > 10  # rising: grow ahead
    for i in range(10):
        d.observe(8.0 + i, {SocketKey(f"x{i}", "m", "pcm_24000", 20): 1, key: 10})
    assert len(d) == 3 and d.peak(key) == 10  # the busiest key stays


def test_dialer_credit_is_what_starts_without_waiting() -> None:
    dialer = Dialer(rate=10.0, burst=3)
    assert dialer.credit(100.0) == 3
    for _ in range(3):
        assert dialer.reserve(None, 100.0) == 0.0
    assert dialer.credit(100.0) == 0
    assert dialer.credit(100.1) == 1
    dialer.busy(100.1, retry_after_s=1.0, booked=100.1)
    assert dialer.credit(100.5) == 0


def test_a_short_socket_budget_is_shared_between_keys_by_their_recent_peaks() -> None:
    busy, quiet, idle = (SocketKey(v, "m", "pcm_24000", 20) for v in ("busy", "quiet", "idle"))
    # 6 sockets for 15 wanted: 3 to 1 by peak, none beyond a key's shortfall.
    assert _share(6, {busy: 10, quiet: 5}, {busy: 45, quiet: 15}) == {busy: 5, quiet: 1}  # D'Hondt 45:15
    assert _share(6, {busy: 2, quiet: 5}, {busy: 45, quiet: 15}) == {busy: 2, quiet: 4}
    assert _share(0, {busy: 2}, {busy: 45}) == {} and _share(3, {}, {idle: 1}) == {}
