"""Injected faults and timing: drop, 1008, stall, garbage, fault budgets, rejected voices, delays."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from emulator.config import GENERIC_FAILURE_REASON
from emulator.runner import RunningEmulator
from emulator.synth import decode_text

from tests.emulator.wsclient import read
from tests.support.timing import LOAD_MARGIN_S

LONG = "A sentence long enough to need several audio chunks at this size."
PCM = {"output_format": "pcm_16000"}


async def _speak(ws: aiohttp.ClientWebSocketResponse, text: str = LONG, cid: str = "c") -> None:
    await ws.send_json({"text": text, "context_id": cid, "close_context": True})


async def test_drop_after_chunks_aborts_without_close_frame(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emu.set_config(chunk_ms=100, drop_after_chunks=2)
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await _speak(ws)
        got = await read(ws)
    assert got.closed and got.close_code == 1006  # abnormal: no close frame was received
    assert len(got.audio_frames()) == 2 and got.errors() == [] and got.finals() == []
    assert emu.stats.faults_fired["drop"] == 1


async def test_close_1008_after_chunks(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(chunk_ms=100, close_1008_after_chunks=1)
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await _speak(ws)
        got = await read(ws)
    assert got.close_code == 1008 and got.close_reason == GENERIC_FAILURE_REASON
    assert len(got.audio_frames()) == 1


async def test_close_1008_custom_reason_at_zero_chunks(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emu.set_config(close_1008_after_chunks=0, close_reason="quota exhausted")
    async with http.ws_connect(emu.stream_input_url(**PCM)) as ws:
        await ws.send_json({"text": " "})
        await ws.send_json({"text": "x", "flush": True})
        got = await read(ws)
    assert got.close_code == 1008 and got.close_reason == "quota exhausted" and got.audio_frames() == []


async def test_stall_keeps_the_socket_open_and_silent(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emu.set_config(chunk_ms=100, stall_after_chunks=1, inactivity_timeout_default=0.2)
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await _speak(ws)
        got = await read(ws, timeout=0.8)  # longer than the inactivity timeout: a stall is not idleness
        assert not got.closed
        assert len(got.audio_frames()) == 1 and got.finals() == []
        await ws.close()
    await emu.wait_until(lambda s: s.ws_connections_active == 0)
    assert emu.stats.faults_fired["stall"] == 1


async def test_garbage_frame_then_normal_service(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(chunk_ms=100, garbage_after_chunks=1)
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await _speak(ws)
        got = await read(ws, finals={"c"})
    bad = [t for t in got.raw_text if not _is_json(t)]
    assert len(bad) == 1
    assert got.raw_text.index(bad[0]) == 1  # right after the first audio chunk
    assert decode_text(got.audio("c"), 16000) == LONG and got.finals() == ["c"]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


async def test_fault_budget_hits_only_the_next_socket(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emu.set_config(chunk_ms=100, drop_after_chunks=3, fault_sockets=1)
    outcomes = []
    for _ in range(3):
        async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
            await _speak(ws)
            got = await read(ws, finals={"c"})
            outcomes.append(got.finals() == ["c"])
    assert outcomes == [False, True, True]
    emu.set_config(fault_sockets=1)  # re-armed: the next socket faults again
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await _speak(ws)
        got = await read(ws, finals={"c"})
    assert got.close_code == 1006


async def test_short_context_never_reaches_threshold(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emu.set_config(drop_after_chunks=3, fault_sockets=1)
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await _speak(ws, "tiny")  # one chunk only
        got = await read(ws, finals={"c"})
    assert got.finals() == ["c"]
    assert emu.state.fault_budget.remaining == 1  # budget untouched: the fault never fired


async def test_rejected_voice_id_closes_1008(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(reject_voice_ids=frozenset({"gone"}))
    async with http.ws_connect(emu.multi_stream_url("gone")) as ws:
        got = await read(ws)
    assert got.close_code == 1008 and got.errors()[0]["error"] == "voice_not_found"


async def test_connect_delay(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(connect_delay_ms=300)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with http.ws_connect(emu.multi_stream_url()):
        elapsed = loop.time() - start
    assert 0.29 <= elapsed < 0.3 + LOAD_MARGIN_S


async def test_ttfb_and_realtime_pacing(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(ttfb_ms=200, realtime_factor=4, chunk_ms=200)
    text = "x" * 20  # 1.2 s of audio -> 0.3 s at 4x real time
    loop = asyncio.get_running_loop()
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        start = loop.time()
        await ws.send_json({"text": text, "context_id": "t", "flush": True})
        first = await ws.receive_json(timeout=2)
        ttfb = loop.time() - start
        got = await read(ws, timeout=1.0)
        total = loop.time() - start
    assert first["audio"]
    assert 0.19 <= ttfb < 1.0
    assert len(got.audio_frames()) >= 4
    assert 0.2 + 1.2 / 4 - 0.25 <= total  # the last chunk cannot arrive before its time


async def test_control_endpoints(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    base = f"{emu.http_url}/_emulator"
    async with http.post(f"{base}/config", json={"drop_after_chunks": 1, "fault_sockets": 2}) as resp:
        assert resp.status == 200
        assert (await resp.json())["drop_after_chunks"] == 1
    assert emu.config.drop_after_chunks == 1 and emu.state.fault_budget.remaining == 2
    async with http.post(f"{base}/config", json={"no_such_field": 1}) as resp:
        assert resp.status == 400
    async with http.post(f"{base}/config", json={"ms_per_char": -5}) as resp:
        assert resp.status == 400
    async with http.get(f"{emu.http_url}/v1/models"):
        pass
    async with http.get(f"{base}/stats") as resp:
        stats = await resp.json()
    assert stats["http_requests"] == {"models": 1} and stats["upstream_requests"] == 1
    async with http.post(f"{base}/reset") as resp:
        body = await resp.json()
    assert body["config"]["drop_after_chunks"] is None and body["stats"]["upstream_requests"] == 0
    async with http.get(f"{base}/health") as resp:
        assert (await resp.json())["ok"] is True
