"""API keys: header, query, first message; wrong or missing keys end the socket with 1008 (HTTP: 401)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from emulator.config import EmulatorConfig
from emulator.runner import RunningEmulator, run_emulator

from tests.emulator.wsclient import read

KEY = "xi-test-key"


@pytest.fixture
async def locked() -> AsyncIterator[RunningEmulator]:
    """An emulator that accepts only ``KEY``."""
    async with run_emulator(EmulatorConfig(api_key=KEY)) as running:
        yield running


async def _flush_one(ws: aiohttp.ClientWebSocketResponse, first: dict[str, object]) -> bool:
    await ws.send_json({"text": "hi", "context_id": "c", "close_context": True, **first})
    got = await read(ws, finals={"c"})
    return got.finals() == ["c"]


async def test_header_key(locked: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(locked.multi_stream_url(), headers={"xi-api-key": KEY}) as ws:
        assert await _flush_one(ws, {})


async def test_query_authorization(locked: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(locked.multi_stream_url(authorization=f"Bearer {KEY}")) as ws:
        assert await _flush_one(ws, {})


@pytest.mark.parametrize("field", ["xi_api_key", "xi-api-key", "authorization"])
async def test_first_message_key(locked: RunningEmulator, http: aiohttp.ClientSession, field: str) -> None:
    async with http.ws_connect(locked.multi_stream_url()) as ws:
        assert await _flush_one(ws, {field: KEY})


async def test_wrong_header_key_closes_after_handshake(
    locked: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(locked.multi_stream_url(), headers={"xi-api-key": "nope"}) as ws:
        got = await read(ws)
    assert got.close_code == 1008
    assert got.errors() == [{"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}]


async def test_missing_key_closes_on_first_message(
    locked: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(locked.multi_stream_url()) as ws:
        await ws.send_json({"text": " ", "context_id": "c"})
        got = await read(ws)
    assert got.close_code == 1008 and got.errors()[0]["error"] == "invalid_api_key"


async def test_http_key(locked: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{locked.http_url}/v1/voices") as resp:
        assert resp.status == 401
        assert (await resp.json())["detail"]["status"] == "invalid_api_key"
    async with http.get(f"{locked.http_url}/v1/voices", headers={"xi-api-key": KEY}) as resp:
        assert resp.status == 200


async def test_no_configured_key_accepts_anything(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(), headers={"xi-api-key": "whatever"}) as ws:
        assert await _flush_one(ws, {})
