"""The ElevenLabs pool against the emulator on a real port: placement, sizing, liveness, options."""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog
from worker.providers.elevenlabs.context import UpstreamContext

from shared.audio import ulaw_decode
from shared.errors import UpstreamBusy
from tests.support.timing import LOAD_MARGIN_S
from tests.worker.elevenlabs_fixtures import VOICE, collect, emulator, held, placed, provider, request, speak, until


async def test_context_completes_on_the_prewarmed_socket() -> None:
    async with emulator() as emu, provider(emu) as p:
        assert emu.stats.ws_connections_opened == 1  # prewarmed at start
        first = await speak(p, "Hello there. ")
        second = await speak(p, "Again, please. ")
        assert first.error is None and first.text() == "Hello there. "
        assert second.error is None and second.text() == "Again, please. "
        assert emu.stats.ws_connections_opened == 1  # both reused the warm socket
        assert all(len(c.audio) % 2 == 0 for c in first.chunks)
        assert p.status()["live_contexts"] == 0


async def test_thirty_contexts_on_three_sockets_never_hit_the_cap() -> None:
    # Slow generation (2x real time) keeps every socket full while the rest queue for slots.
    async with emulator(realtime_factor=8.0, chunk_ms=120) as emu, \
            provider(emu, pool_max_sockets=3, pool_contexts_per_socket=5, upstream_concurrency=30,
                     upstream_slot_wait_s=20.0) as p:
        texts = [f"Context {i:02d} speaks. " for i in range(30)]
        results = await asyncio.gather(*(speak(p, t) for t in texts))
        for text, out in zip(texts, results, strict=True):
            assert out.error is None
            assert out.text() == text
        stats = emu.stats
        assert stats.max_active_contexts_per_socket == 5
        assert stats.context_cap_rejections == 0
        assert 1008 not in stats.close_codes_sent and not stats.errors_sent
        assert stats.ws_connections_opened <= 3
        assert stats.contexts_opened == 30


async def test_upstream_busy_after_the_bounded_wait_and_fifo_order() -> None:
    async with emulator(realtime_factor=1.0) as emu, \
            provider(emu, upstream_concurrency=1, upstream_slot_wait_s=0.3) as p:
        holder = await held(p)
        t0 = time.monotonic()
        with pytest.raises(UpstreamBusy) as info:
            await held(p)
        assert 0.25 <= time.monotonic() - t0 < 0.3 + LOAD_MARGIN_S  # its 0.3 s wait (the holder never ends)
        assert info.value.code == "upstream_busy" and info.value.details["limit"] == "concurrency"
        await holder.cancel()

    # FIFO: with one permit, waiters are served in arrival order as slots free up.
    async with emulator(realtime_factor=8.0) as emu, \
            provider(emu, upstream_concurrency=1, upstream_slot_wait_s=10.0) as p:
        order: list[int] = []

        async def job(i: int) -> None:
            stream = await p.open_stream(request())
            await stream.send_text(f"job {i} ", flush=True)  # asks for its permit here
            await placed(stream)
            order.append(i)
            await stream.end_input()
            out = await collect(stream)
            assert out.error is None and out.text() == f"job {i} "

        tasks = []
        for i in range(4):
            tasks.append(asyncio.create_task(job(i)))
            await asyncio.sleep(0.02)
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3]
        assert emu.stats.max_active_contexts_per_socket == 1


async def test_contexts_needing_different_urls_get_different_sockets() -> None:
    async with emulator() as emu, provider(emu, pool_max_sockets=8) as p:
        reqs = [request(), request(voice="otherVoice"), request(fmt="ulaw_8000"),
                request(sync_alignment=True), request(language_code="de"), request()]
        streams = [await p.open_stream(r) for r in reqs]
        for s in streams:
            await s.send_text("ab ", flush=True)
            await placed(s)
        sockets = [s.socket for s in streams if isinstance(s, UpstreamContext)]
        assert len(sockets) == 6
        assert len({id(s) for s in sockets[:5]}) == 5  # one socket per distinct URL
        assert sockets[5] is sockets[0]  # same URL shares
        outs = []
        for s in streams:
            await s.end_input()
            outs.append(await collect(s))
            await s.cancel()
        assert all(o.error is None for o in outs)
        assert emu.stats.ws_connections_by_endpoint["multi-stream-input"] == 5
        assert outs[2].audio and ulaw_decode(outs[2].audio)  # native μ-law at 8 kHz
        from emulator.synth import decode_text
        assert decode_text(ulaw_decode(outs[2].audio), 8000) == "ab "
        assert outs[3].chunks[0].alignment is not None
        assert outs[3].chunks[0].alignment["chars"][:2] == ["a", "b"]


async def test_idle_pool_survives_many_inactivity_timeouts() -> None:
    # Upstream closes sockets idle for 1 s; the pool sees 3 s of idleness and must lose nothing.
    async with emulator(inactivity_timeout_default=1.0) as emu, \
            provider(emu, upstream_inactivity_timeout_s=1, pool_keepalive_s=0.3, pool_min_sockets=2) as p:
        with structlog.testing.capture_logs() as logs:
            low = 99
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                low = min(low, p.status()["sockets"]["open"])
                await asyncio.sleep(0.02)
            # A context that waits for text longer than the timeout stays alive on per-context keep-alives.
            stream = await p.open_stream(request())
            await stream.send_text("slow ")
            await asyncio.sleep(1.6)
            await stream.send_text("text ", flush=True)
            await stream.end_input()
            out = await collect(stream)
        assert low >= 2
        assert out.error is None and out.text() == "slow text "
        assert not emu.stats.close_codes_sent and not emu.stats.errors_sent  # upstream never closed one
        assert not [e for e in logs if e["log_level"] in ("warning", "error", "critical")]
        assert emu.stats.ws_connections_opened > 2  # idle sockets were refreshed, not pinged
        assert emu.stats.contexts_opened == 1  # and refreshing never created a context


async def test_max_age_drains_and_replaces_without_failing_contexts() -> None:
    async with emulator(realtime_factor=4.0, chunk_ms=120) as emu, \
            provider(emu, pool_max_socket_age_s=0.4, pool_min_sockets=1) as p:
        texts = [f"Aged socket {i}. " for i in range(4)]
        results = await asyncio.gather(*(speak(p, t) for t in texts))  # each takes ~1 s
        assert [o.text() for o in results] == texts and all(o.error is None for o in results)
        late = await speak(p, "After the drain. ")
        assert late.error is None and late.text() == "After the drain. "
        await asyncio.sleep(0.6)
        assert emu.stats.ws_connections_opened >= 2
        assert not emu.stats.close_codes_sent and not emu.stats.errors_sent
        status = p.status()
        assert status["sockets"]["open"] >= 1 and status["live_contexts"] == 0


async def test_rapid_barge_ins_never_exceed_the_cap() -> None:
    # Cancel-and-restart faster than upstream finishes: cancelled contexts hold their slot until their final.
    async with emulator(realtime_factor=4.0, ttfb_ms=30) as emu, \
            provider(emu, pool_max_sockets=1, upstream_slot_wait_s=10.0) as p:
        last = None
        for i in range(15):
            stream = await p.open_stream(request())
            await stream.send_text(f"Turn number {i} is being said. ", flush=True)
            if last is not None:
                await last.cancel()
            last = stream
            await asyncio.sleep(0.01)
        assert last is not None
        await last.end_input()
        out = await collect(last)
        assert out.error is None and out.text() == "Turn number 14 is being said. "
        assert emu.stats.max_active_contexts_per_socket <= 5
        assert emu.stats.context_cap_rejections == 0 and not emu.stats.close_codes_sent


async def test_voice_settings_sent_once_and_converted_formats() -> None:
    async with emulator() as emu, provider(emu) as p:
        req = request(fmt="wav_24000", voice_settings={"stability": 0.3}, speed=1.1,
                      chunk_length_schedule=[50])
        stream = await p.open_stream(req)
        await stream.send_text("wav ")
        await stream.send_text("text ", flush=True)
        await stream.end_input()
        out = await collect(stream)
        assert out.error is None
        audio = out.audio
        assert audio[:4] == b"RIFF" and audio.count(b"RIFF") == 1
        from emulator.synth import decode_text
        assert decode_text(audio[44:], 24000) == "wav text "
        assert not emu.stats.close_codes_sent  # voice_settings never re-sent, so never a 1008

        mp3 = await speak(p, "mp3 ", req=request(fmt="mp3_24000_48"))
        assert mp3.error is None and mp3.audio[:1] == b"\xff"


async def test_voices_and_status() -> None:
    async with emulator() as emu, provider(emu, elevenlabs_voices=(VOICE, "b")) as p:
        assert [v.voice_id for v in p.voices()] == [VOICE, "b"]
        status = p.status()
        assert status["sockets"] == {"connecting": 0, "open": 1, "draining": 0}
        assert status["limits"]["contexts_per_socket"] == 5


async def test_pool_metrics_follow_the_pool() -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"provider": "elevenlabs", **labels}) or 0.0

    before_new = sample("tts_pool_socket_uses_total", socket="new")
    before_reused = sample("tts_pool_socket_uses_total", socket="reused")
    before_connect = sample("tts_upstream_connect_seconds_count")
    before_wait = sample("tts_pool_slot_wait_seconds_count")
    async with emulator() as emu, provider(emu) as p:
        for text in ("one ", "two ", "three "):
            assert (await speak(p, text)).error is None
        # Socket counts are scanned at most every 0.25 s (pool._gauges): they follow within that.
        await until(lambda: sample("tts_pool_sockets", state="open") == 1, timeout=2.0)
        assert sample("tts_pool_live_contexts") == 0
    assert sample("tts_pool_socket_uses_total", socket="new") - before_new == 1
    assert sample("tts_pool_socket_uses_total", socket="reused") - before_reused == 2
    assert sample("tts_upstream_connect_seconds_count") - before_connect == 1
    assert sample("tts_pool_slot_wait_seconds_count") - before_wait == 3
