"""Injected upstream failures: each one hits only the contexts on the failing socket, with a typed error.

Contexts that have produced no audio move to another socket with their buffered text and finish
as if nothing happened; contexts that already played audio end with a clear error when failover is
off (``FAILOVER_MAX_PER_CONTEXT=0``, as here; with it on they resume: test_elevenlabs_failover.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog
from worker.providers.base import SynthesisStream
from worker.providers.elevenlabs import ElevenLabsProvider
from worker.providers.elevenlabs.context import UpstreamContext

from shared.errors import UpstreamDisconnected, UpstreamError, UpstreamRejected, UpstreamTimeout
from tests.support.timing import LOAD_MARGIN_S
from tests.worker.elevenlabs_fixtures import (
    Outcome,
    collect,
    el_settings,
    emulator,
    placed,
    provider,
    request,
    speak,
    until,
)

LONG = "This sentence is long enough to stream for a while. "


def _sid(stream: object) -> int:
    assert isinstance(stream, UpstreamContext) and stream.socket is not None
    return stream.socket.sid


async def _speaker_beside(p: ElevenLabsProvider, quiet_text: str) -> tuple[SynthesisStream, SynthesisStream]:
    """Two contexts on one socket: one speaking ``LONG`` (flushed, input ended), one holding ``quiet_text``."""
    speaking = await p.open_stream(request())
    quiet = await p.open_stream(request())
    await speaking.send_text(LONG)
    await placed(speaking)
    await quiet.send_text(quiet_text)
    await placed(quiet)
    assert _sid(speaking) == _sid(quiet)
    await speaking.send_text("", flush=True)
    await speaking.end_input()
    return speaking, quiet


@pytest.mark.parametrize("fault", ["drop_after_chunks", "close_1008_after_chunks"])
async def test_socket_failure_mid_stream_hits_only_its_own_contexts(fault: str) -> None:
    async with emulator(ttfb_ms=200, realtime_factor=4.0, chunk_ms=120) as emu, \
            provider(emu, pool_min_sockets=1, pool_max_sockets=4, pool_contexts_per_socket=3,
                           failover_max_per_context=0) as p:
        speaking = await p.open_stream(request())
        quiet = await p.open_stream(request())
        late = await p.open_stream(request())
        other = await p.open_stream(request())
        # Placed (in this order) at their first text, all buffered upstream: nothing generated yet.
        for stream, text in ((speaking, LONG), (quiet, "quiet words "), (late, "late "), (other, "ok ")):
            await stream.send_text(text)
            await placed(stream)
        assert _sid(speaking) == _sid(quiet) == _sid(late) != _sid(other)
        failed_sid = _sid(speaking)
        emu.set_config(None, **{fault: 3, "fault_sockets": 1})

        await speaking.send_text("", flush=True)
        await speaking.end_input()
        await other.send_text("", flush=True)  # two chunks: its socket never reaches the fault
        await other.end_input()
        spoken = Outcome()

        async def listen() -> None:
            try:
                async for chunk in speaking:
                    spoken.chunks.append(chunk)
            except UpstreamError as e:
                spoken.error = e

        listener = asyncio.create_task(listen())
        await until(lambda: len(spoken.chunks) >= 1)
        await late.send_text("words ", flush=True)  # ended, but its audio is 200 ms away
        await late.end_input()
        await listener

        assert isinstance(spoken.error, UpstreamDisconnected)
        assert spoken.error.details["audio_sent"] is True
        assert 1 <= len(spoken.chunks) <= 3
        assert LONG.startswith(spoken.text())

        late_out = await collect(late)
        assert late_out.error is None and late_out.text() == "late words "
        await quiet.send_text("and more ", flush=True)
        await quiet.end_input()
        quiet_out = await collect(quiet)
        assert quiet_out.error is None and quiet_out.text() == "quiet words and more "
        other_out = await collect(other)
        assert other_out.error is None and other_out.text() == "ok "
        assert isinstance(quiet, UpstreamContext) and isinstance(late, UpstreamContext)
        assert quiet.attempts == 2 and late.attempts == 2
        assert failed_sid not in [s["id"] for s in p.status()["socket_list"]]
        for s in (speaking, quiet, late, other):
            await s.cancel()
        assert emu.stats.faults_fired[fault.removesuffix("_after_chunks")] == 1


async def test_stall_before_first_audio_times_out_inside_the_deadline() -> None:
    async with emulator(stall_after_chunks=0, fault_sockets=1) as emu, \
            provider(emu, upstream_first_audio_timeout_s=0.5) as p:
        t0 = time.monotonic()
        out = await speak(p, "never voiced ")
        elapsed = time.monotonic() - t0
        assert isinstance(out.error, UpstreamTimeout) and not out.chunks
        # This test's 0.5 s deadline fired, not the fixtures' default 3 s one (hence a smaller margin).
        assert 0.45 <= elapsed < 0.5 + 2.0
        after = await speak(p, "fine ")  # the stalled socket was replaced
        assert after.error is None and after.text() == "fine "
        assert emu.stats.faults_fired["stall"] == 1


async def test_stall_mid_stream_times_out_and_moves_the_silent_bystander() -> None:
    async with emulator(stall_after_chunks=2, fault_sockets=1, realtime_factor=4.0, chunk_ms=120) as emu, \
            provider(emu, upstream_first_audio_timeout_s=0.5, failover_max_per_context=0) as p:
        speaking, bystander = await _speaker_beside(p, "bystander ")
        t0 = time.monotonic()
        out = await collect(speaking)
        assert isinstance(out.error, UpstreamTimeout) and len(out.chunks) == 2
        assert out.first_audio_at is not None
        assert time.monotonic() - t0 < 0.5 + 2.0  # the 0.5 s inter-chunk deadline, not the default 3 s
        await bystander.end_input()
        moved = await collect(bystander)
        assert moved.error is None and moved.text() == "bystander "
        await speaking.cancel()
        await bystander.cancel()


async def test_cancelled_context_late_audio_never_reaches_the_consumer() -> None:
    async with emulator(realtime_factor=3.0, chunk_ms=120) as emu, provider(emu) as p:
        stream = await p.open_stream(request())
        await stream.send_text(LONG, flush=True)
        await stream.end_input()
        got: list[bytes] = []

        async def consume() -> None:
            async for chunk in stream:
                got.append(chunk.audio)

        consumer = asyncio.create_task(consume())
        await until(lambda: len(got) >= 2)
        await stream.cancel()
        seen = len(got)
        await asyncio.wait_for(consumer, 0.1)  # iteration stops promptly
        assert p.status()["live_contexts"] == 1  # the slot waits for the upstream final
        assert emu.stats.messages_received["close_context"] == 1
        await until(lambda: p.status()["live_contexts"] == 0)
        assert emu.stats.audio_chunks_sent > seen  # late audio did arrive upstream-side...
        assert len(got) == seen  # ...and none of it reached the consumer
        nxt = await speak(p, "Next turn. ")
        assert nxt.error is None and nxt.text() == "Next turn. "  # nothing stale leaks into it


async def test_invalid_voice_rejects_only_that_context() -> None:
    async with emulator(reject_voice_ids=["badVoice"], realtime_factor=8.0) as emu, provider(emu) as p:
        good = asyncio.create_task(speak(p, "good voice speaking "))
        bad = await speak(p, "bad ", req=request(voice="badVoice"))
        assert isinstance(bad.error, UpstreamRejected) and bad.error.code == "upstream_rejected"
        good_out = await good
        assert good_out.error is None and good_out.text() == "good voice speaking "
        await asyncio.sleep(0.3)
        assert emu.stats.ws_connections_opened == 2  # prewarmed + the one rejected: no reconnect loop
        assert emu.stats.errors_sent["voice_not_found"] == 1


async def test_garbage_frame_replaces_the_socket() -> None:
    async with emulator(garbage_after_chunks=1, fault_sockets=1, realtime_factor=4.0, chunk_ms=120) as emu, \
            provider(emu, failover_max_per_context=0) as p:
        speaking, quiet = await _speaker_beside(p, "still here ")
        out = await collect(speaking)
        assert type(out.error) is UpstreamError and out.error.details["audio_sent"] is True
        assert len(out.chunks) == 1
        await quiet.end_input()
        moved = await collect(quiet)
        assert moved.error is None and moved.text() == "still here "
        after = await speak(p, "after garbage ")
        assert after.error is None and after.text() == "after garbage "
        assert emu.stats.faults_fired["garbage"] == 1
        await speaking.cancel()
        await quiet.cancel()


async def test_unreachable_upstream_fails_contexts_clearly_and_start_survives() -> None:
    async with emulator() as emu:
        url = emu.http_url
    # The port is closed now: start() must not raise, and a context must fail with a typed error.
    p = ElevenLabsProvider(el_settings(upstream_first_audio_timeout_s=1.0), base_url=url)
    await p.start()
    try:
        t0 = time.monotonic()
        out = await speak(p, "nobody home ")
        assert isinstance(out.error, UpstreamDisconnected) and out.error.details["audio_sent"] is False
        assert time.monotonic() - t0 < 1.0 + LOAD_MARGIN_S  # a refused connect fails fast, never hangs
    finally:
        await p.close()


async def test_api_key_goes_in_the_header_and_never_into_logs() -> None:
    secret = "sk_test_0123456789abcdef"
    async with emulator(api_key=secret) as emu:
        with structlog.testing.capture_logs() as logs:
            good = ElevenLabsProvider(el_settings(), base_url=emu.http_url, api_key=secret)
            await good.start()
            try:
                out = await speak(good, "keyed ")
                assert out.error is None and out.text() == "keyed "
                assert [v.voice_id for v in good.voices()]  # GET /v1/voices with the key worked
            finally:
                await good.close()
            bad = ElevenLabsProvider(el_settings(), base_url=emu.http_url, api_key="wrong")
            await bad.start()
            try:
                out = await speak(bad, "unkeyed ")
                assert isinstance(out.error, UpstreamRejected)
            finally:
                await bad.close()
        assert secret not in repr(logs) and "wrong" not in repr(logs)


async def test_close_fails_in_flight_streams_and_leaves_nothing_running() -> None:
    async with emulator(realtime_factor=2.0, chunk_ms=120) as emu:
        async with provider(emu) as p:
            stream = await p.open_stream(request())
            await stream.send_text(LONG, flush=True)
            await stream.end_input()
            got: list[bytes] = []

            async def consume() -> UpstreamError | None:
                try:
                    async for chunk in stream:
                        got.append(chunk.audio)
                except UpstreamError as e:
                    return e
                return None

            consumer = asyncio.create_task(consume())
            await until(lambda: len(got) >= 1)
        error = await asyncio.wait_for(consumer, 1.0)
        assert isinstance(error, UpstreamDisconnected) and error.details["audio_sent"] is True
        await emu.wait_until(lambda s: s.ws_connections_active == 0)


async def test_one_silent_context_on_a_busy_socket_fails_alone_and_the_socket_is_retired() -> None:
    # The emulator stalls whole sockets; this tiny server ignores one context while serving another.
    import base64
    import json

    from aiohttp import web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            data = json.loads(msg.data)
            cid = data.get("context_id", "")
            if cid.startswith("busy") and data.get("close_context"):
                for _ in range(8):
                    await ws.send_json({"audio": base64.b64encode(b"\x00\x01" * 240).decode(), "contextId": cid})
                    await asyncio.sleep(0.06)
                await ws.send_json({"audio": None, "isFinal": True, "contextId": cid})
        return ws

    app = web.Application()
    app.router.add_get("/v1/text-to-speech/{voice}/multi-stream-input", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    p = ElevenLabsProvider(el_settings(upstream_first_audio_timeout_s=0.3), base_url=f"http://127.0.0.1:{port}")
    await p.start()
    try:
        slow = await p.open_stream(request(key="slow-1"))
        busy = await p.open_stream(request(key="busy-1"))
        await slow.send_text("never answered ", flush=True)
        await placed(slow)
        await busy.send_text("answered ", flush=True)
        await placed(busy)
        first_sid = _sid(slow)
        assert _sid(busy) == first_sid
        await busy.end_input()
        slow_out, busy_out = await asyncio.gather(collect(slow), collect(busy))
        assert isinstance(slow_out.error, UpstreamTimeout) and not slow_out.chunks
        assert busy_out.error is None and len(busy_out.chunks) == 8  # the socket itself was fine
        # The socket drained; with only the abandoned context left, it is closed to reclaim the slot.
        await until(lambda: first_sid not in [s["id"] for s in p.status()["socket_list"]], 3.0 + LOAD_MARGIN_S)
        await until(lambda: p.status()["live_contexts"] == 0 and p.status()["sockets"]["open"] == 1, 3.0 + LOAD_MARGIN_S)
        for s in (slow, busy):
            await s.cancel()
    finally:
        await p.close()
        await runner.cleanup()


async def test_a_context_that_gives_up_on_a_dialling_socket_frees_its_permit_at_once() -> None:
    # One handshake per 4 s: the second voice's socket waits in the dial schedule far longer than its
    # context's deadline (1 s, extended once while dialling), so the context gives up first.
    async with emulator() as emu, provider(emu, default_voice="", pool_min_sockets=0, pool_handshake_rate=0.25,
                                           pool_handshake_burst=1, upstream_first_audio_timeout_s=1.0) as p:
        first = await speak(p, "first ")
        assert first.error is None
        out = await speak(p, "never sent ", req=request(voice="other"))
        assert isinstance(out.error, UpstreamDisconnected) and "could not connect" in out.error.message
        status = p.status()
        assert status["sockets"]["connecting"] == 1  # its socket is still waiting to dial...
        assert status["live_contexts"] == 0  # ...yet the context that gave up holds no permit
        assert [s["contexts"] for s in status["socket_list"] if s["state"] == "connecting"] == [0]
        # Once that socket opens, nothing about the abandoned context goes out: the upstream never
        # generates for a context that holds no permit.
        await until(lambda: p.status()["sockets"]["open"] == 2, timeout=15.0)
        later = await speak(p, "later ", req=request(voice="other"))
        assert later.error is None and later.text() == "later "
        assert emu.stats.contexts_opened == 2  # "first" and "later"
