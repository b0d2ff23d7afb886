"""Clients that leave, and gateways that restart: nothing keeps running, nobody is left hanging."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.compat.conftest import EL_VOICE, Stack, el_stack
from tests.compat.elclient import ElClient
from tests.conftest import fast_settings
from tests.support.stack import running_gateway

LONG = "This utterance is long enough that nobody waits for all of it to be spoken. " * 3
SLOW = {"realtime_factor": 1.0, "chunk_ms": 100}


async def _idle(stack: Stack, closes: int) -> None:
    """Until the gateway has no open session and ``closes`` upstream contexts were closed by the worker.

    ElevenLabs' protocol has no abort: the worker's cancel is a ``close_context`` upstream (the
    provider may finish what it had started, as the emulator does, but nothing reaches a client).
    """
    assert stack.emu is not None
    sessions = None
    for _ in range(300):
        async with stack.http.get(f"{stack.base}/readyz") as r:
            sessions = (await r.json()).get("sessions")
        if sessions == 0 and stack.emu.stats.messages_received["close_context"] >= closes:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still busy: sessions={sessions}, stats={stack.emu.stats.snapshot()}")


async def test_http_client_leaving_mid_stream_cancels_upstream(redis_url: str) -> None:
    async with el_stack(redis_url, emu_config=SLOW) as stack:
        async with stack.http.post(f"{stack.base}/v1/text-to-speech/{EL_VOICE}/stream?output_format=pcm_16000",
                                   json={"text": LONG}) as r:
            assert await r.content.readany()
            r.close()  # hang up after the first chunk
        await _idle(stack, closes=1)


async def test_websocket_client_leaving_cancels_every_context(redis_url: str) -> None:
    async with el_stack(redis_url, emu_config=SLOW) as stack:
        async with ElClient.connect(stack.base, stack.http, voice=EL_VOICE, output_format="pcm_16000") as c:
            for i in range(7):
                await c.send(text=LONG, context_id=f"c{i}", flush=True)
            await c.pump_until(lambda c: all(c.get(f"c{i}").chunks for i in range(7)), timeout=10)
            assert stack.emu is not None and stack.emu.stats.contexts_active == 7
        await _idle(stack, closes=7)


async def test_gateway_restart_closes_compat_sockets_with_1001(redis_url: str) -> None:
    async with el_stack(redis_url):
        # a second gateway on the same Redis and worker, stopped under a client that keeps reading
        settings = fast_settings(redis_url, drain_grace_s=0.2)
        async with aiohttp.ClientSession() as http:
            async with running_gateway(settings) as other:
                ws = await http.ws_connect(f"{other.replace('http', 'ws', 1)}/v1/text-to-speech/{EL_VOICE}"
                                           "/multi-stream-input")
                await ws.send_json({"text": " ", "context_id": "open"})

                async def read_all() -> list[dict[str, object]]:
                    return [msg.json() async for msg in ws]

                reader = asyncio.create_task(read_all())
                await asyncio.sleep(0.1)
            frames = await reader
    assert ws.close_code == 1001
    assert frames[-1]["error"] == "shutting_down" and frames[-1]["code"] == 1001


async def test_a_client_that_stops_reading_is_cut_off(redis_url: str) -> None:
    async with el_stack(redis_url, session_queue_frames=8, emu_config={"chunk_ms": 20}) as stack:
        async with ElClient.connect(stack.base, stack.http, voice=EL_VOICE, output_format="pcm_48000") as c:
            await c.send(text=LONG * 4, context_id="flood", flush=True)
            await c.send(context_id="flood", close_context=True)
            await asyncio.sleep(1.5)  # not reading while the audio floods in
            await c.drain_until_closed(timeout=20)
        # It was told why (the close frame itself may be lost to a peer that was not reading), and the
        # gateway holds nothing of it any more.
        assert c.socket_errors[-1]["error"] == "slow_consumer" and c.socket_errors[-1]["code"] == 1008
        assert c.close_code in (1008, 1006)
        await _idle(stack, closes=1)
