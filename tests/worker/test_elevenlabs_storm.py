"""Bursts on a cold pool (issue 15, item 3): handshakes are paced, refusals honoured, no context lost.

The emulator limits handshakes like the provider's edge (a token bucket answering 429
``system_busy`` with ``Retry-After``), so a storm of sockets is reproduced on this box.
"""

from __future__ import annotations

import asyncio

from tests.worker.elevenlabs_fixtures import collect, emulator, provider, request, until

N = 200


async def _speak_all(p: object, n: int) -> list[tuple[str, object]]:
    async def one(i: int) -> tuple[str, object]:
        stream = await p.open_stream(request())  # type: ignore[attr-defined]
        text = f"storm {i} "
        await stream.send_text(text, flush=True)
        await stream.end_input()
        return text, await collect(stream)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_two_hundred_contexts_at_once_on_a_cold_pool_all_complete_despite_refused_handshakes() -> None:
    # The pool at its default pace (50 handshakes/s, 25 at once) meets an edge that admits 20/s, 5 at
    # once: handshakes get refused (429 + Retry-After), opening the 40 sockets takes about a context's
    # deadline (4 s), and contexts wait on sockets still dialling. Every one still ends with its own
    # audio. (Before the handshake limiter, 55-75 of the 200 ended upstream_disconnected here, none
    # with audio.)
    async with emulator(handshake_rate=20, handshake_burst=5) as emu, \
            provider(emu, pool_min_sockets=0, pool_max_sockets=N // 5, upstream_concurrency=N,
                     upstream_slot_wait_s=30.0, upstream_first_audio_timeout_s=4.0) as p:
        results = await _speak_all(p, N)
        errors = [o.error.message for _, o in results if o.error is not None]  # type: ignore[attr-defined]
        assert errors == []
        for text, out in results:
            assert out.text() == text  # type: ignore[attr-defined]
        assert emu.stats.handshakes_refused > 0  # the storm was real
        assert p.status()["handshakes_refused"] > 0
        assert p.status()["live_contexts"] == 0 and p.status()["waiting"] == 0


async def test_a_pool_paced_below_the_providers_rate_is_never_refused() -> None:
    # 30 sockets wanted at once; the pool books them at 10/s (5 at once), the emulator admits 20/s
    # (10 at once): the margin absorbs a loaded box's scheduling noise.
    async with emulator(handshake_rate=20, handshake_burst=10) as emu, \
            provider(emu, pool_min_sockets=0, pool_max_sockets=30, upstream_concurrency=150,
                     upstream_slot_wait_s=30.0, upstream_first_audio_timeout_s=20.0,
                     pool_handshake_rate=10.0, pool_handshake_burst=5) as p:
        results = await _speak_all(p, 150)
        assert [o.error for _, o in results if o.error is not None] == []  # type: ignore[attr-defined]
        assert emu.stats.handshakes_refused == 0
        assert emu.stats.ws_connections_by_endpoint.get("multi-stream-input", 0) <= 30


async def test_a_pool_holds_more_than_a_hundred_open_sockets() -> None:
    # One context per socket, 110 at once: the pool must open 110 sockets. aiohttp's default connector
    # allows 100 connections per session, so before the fix the last 10 hung in connect until their
    # deadline and ended upstream_disconnected (in a 1,000-stream run: 232 sockets, TTFA p90 12.7 s).
    n = 110
    async with emulator() as emu, \
            provider(emu, pool_min_sockets=0, pool_max_sockets=n, pool_contexts_per_socket=1,
                     upstream_concurrency=n, upstream_slot_wait_s=30.0, upstream_first_audio_timeout_s=8.0,
                     pool_handshake_rate=200.0, pool_handshake_burst=n) as p:
        streams = []
        for i in range(n):  # every context placed (on its own socket) before any finishes
            stream = await p.open_stream(request())
            await stream.send_text(f"socket {i} ")
            streams.append(stream)
        await until(lambda: emu.stats.ws_connections_by_endpoint.get("multi-stream-input", 0) >= n, timeout=8.0)
        for stream in streams:
            await stream.send_text("", flush=True)
            await stream.end_input()
        outcomes = await asyncio.gather(*(collect(s) for s in streams))
        assert [o.error.message for o in outcomes if o.error is not None] == []
        assert [o.text() for o in outcomes] == [f"socket {i} " for i in range(n)]
        assert emu.stats.ws_connections_by_endpoint.get("multi-stream-input", 0) >= n
