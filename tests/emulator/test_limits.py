"""Account-level refusals: the handshake rate limit (429 or 1008) and too many concurrent requests."""

from __future__ import annotations

import asyncio
import base64
import os

import aiohttp
import pytest
from emulator.config import EmulatorConfig
from emulator.limits import HandshakeBucket
from emulator.runner import RunningEmulator

from tests.emulator.wsclient import read

PCM = {"output_format": "pcm_16000"}


def _upgrade_headers() -> dict[str, str]:
    return {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}


async def test_handshakes_over_the_rate_get_429(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    # One token per 5 s: every attempt below lands long before a refill, however slow the box.
    emu.set_config(handshake_rate=0.2, handshake_burst=3)
    admitted = [await http.ws_connect(emu.multi_stream_url(**PCM)) for _ in range(3)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(emu.multi_stream_url(**PCM))
    assert refused.value.status == 429
    async with http.get(emu.multi_stream_url(**PCM), headers=_upgrade_headers()) as resp:
        assert resp.status == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 5
        assert (await resp.json())["detail"]["status"] == "system_busy"
    assert emu.stats.handshakes_refused == 2
    assert emu.stats.ws_connections_opened == 3  # a refused handshake never became a socket

    # The admitted sockets are unaffected: they still speak.
    ws = admitted[0]
    await ws.send_json({"text": "still here", "context_id": "a", "close_context": True})
    got = await read(ws, finals={"a"})
    assert got.finals() == ["a"] and got.errors() == []
    for sock in admitted:
        await sock.close()

    # A change to the rate settings refills the bucket (each test's storm starts from a full burst).
    emu.set_config(handshake_burst=1)
    async with http.ws_connect(emu.multi_stream_url(**PCM)):
        pass
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await http.ws_connect(emu.multi_stream_url(**PCM))


async def test_handshake_refusal_can_be_a_1008_close(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(handshake_rate=0.2, handshake_burst=1, handshake_refusal="close_1008")
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as first:
        async with http.ws_connect(emu.multi_stream_url(**PCM)) as second:
            got = await read(second)
        assert got.close_code == 1008
        assert [e["error"] for e in got.errors()] == ["system_busy"]
        assert got.errors()[0]["code"] == 1008
        assert not first.closed
    assert emu.stats.handshakes_refused == 1


def test_bucket_refills_at_the_rate() -> None:
    config = EmulatorConfig(handshake_rate=10.0, handshake_burst=2)
    bucket = HandshakeBucket()
    assert bucket.admit(100.0, config) is None
    assert bucket.admit(100.0, config) is None
    wait = bucket.admit(100.0, config)
    assert wait == pytest.approx(0.1)
    assert bucket.admit(100.05, config) == pytest.approx(0.05)  # half a token so far
    assert bucket.admit(100.11, config) is None  # a whole token after 1 / rate
    assert bucket.admit(105.0, config) is None and bucket.admit(105.0, config) is None  # refills to the burst only
    assert bucket.admit(105.0, config) is not None
    assert HandshakeBucket().admit(0.0, EmulatorConfig()) is None  # unset rate: unlimited


async def test_too_many_concurrent_generations_refused_on_ws(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    # Real-time pacing keeps the first generation running while the second one starts.
    emu.set_config(max_concurrent_requests=1, realtime_factor=1, chunk_ms=100)
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as a, \
            http.ws_connect(emu.multi_stream_url(**PCM)) as b, \
            http.ws_connect(emu.multi_stream_url(**PCM)) as idle:  # an idle socket does not count
        await a.send_json({"text": "a generation that lasts a while", "context_id": "a", "close_context": True})
        first = await a.receive_json(timeout=5)
        assert first["audio"] and first["contextId"] == "a"  # a is generating now
        await b.send_json({"text": "second", "context_id": "b", "close_context": True})
        got_b = await read(b)
        got_a = await read(a, finals={"a"}, timeout=10)
        assert not idle.closed
    assert got_b.close_code == 1008
    assert [(e["error"], e["code"]) for e in got_b.errors()] == [("too_many_concurrent_requests", 1008)]
    assert got_a.finals() == ["a"] and got_a.errors() == []
    assert emu.stats.concurrency_refusals["ws"] == 1
    assert emu.stats.max_concurrent_requests_seen == 1

    # The slot came back with a's last chunk: a new socket generates normally.
    await emu.wait_until(lambda s: s.contexts_active == 0)
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as c:
        await c.send_json({"text": "later", "context_id": "c", "close_context": True})
        got_c = await read(c, finals={"c"}, timeout=5)
    assert got_c.finals() == ["c"] and got_c.errors() == []


async def test_too_many_concurrent_requests_refused_on_http(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emu.set_config(max_concurrent_requests=1, realtime_factor=1, chunk_ms=100)
    body = {"text": "a streamed request that takes a while"}
    async with http.post(emu.tts_url(suffix="/stream", **PCM), json=body) as first:
        assert first.status == 200
        await first.content.readany()  # streaming: the slot is held
        async with http.post(emu.tts_url(**PCM), json={"text": "second"}) as second:
            assert second.status == 429
            assert (await second.json())["detail"]["status"] == "too_many_concurrent_requests"
        await first.read()
    async with http.post(emu.tts_url(**PCM), json={"text": "third"}) as third:
        assert third.status == 200 and len(await third.read()) == 5 * 960 * 2
    assert emu.stats.concurrency_refusals["http"] == 1


async def test_limits_are_set_through_the_control_api(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    url = f"{emu.http_url}/_emulator/config"
    async with http.post(url, json={"handshake_refusal": "teapot"}) as resp:
        assert resp.status == 400 and "handshake_refusal" in (await resp.json())["error"]
    async with http.post(url, json={"handshake_rate": 5, "handshake_burst": 2,
                                    "max_concurrent_requests": 3}) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert (data["handshake_rate"], data["handshake_burst"], data["max_concurrent_requests"]) == (5, 2, 3)
    await asyncio.sleep(0)
    assert emu.config.handshake_rate == 5
