"""shared/ws_frames.py: each WebSocket frame in one transport write, byte for byte what aiohttp framed."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp._websocket import writer as ws_writer

from shared.ws_frames import write_frames_whole


class _Transport:
    """Records each write; never closing, never paused."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


class _Protocol:
    _paused = False


async def _frame_writes(payload: bytes) -> list[bytes]:
    transport = _Transport()
    w = ws_writer.WebSocketWriter(_Protocol(), transport)  # type: ignore[arg-type]
    await w.send_frame(payload, WSMsgType.BINARY)
    return transport.writes


async def test_a_large_frame_goes_out_in_one_write_with_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_writer, "MSG_SIZE", ws_writer.MSG_SIZE)  # restored after the test
    audio = bytes(range(256)) * 96  # 24 KB: 500 ms of pcm_24000
    split = await _frame_writes(audio)
    assert len(split) == 2  # aiohttp's default: header, then payload
    assert write_frames_whole() is True
    whole = await _frame_writes(audio)
    assert whole == [b"".join(split)]


async def test_without_the_knob_the_default_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(ws_writer, "MSG_SIZE")
    assert write_frames_whole() is False


async def test_a_client_receives_large_frames_intact(aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_writer, "MSG_SIZE", ws_writer.MSG_SIZE)
    write_frames_whole()
    frames = [bytes([i]) * n for i, n in enumerate((10, 20_000, 70_000, 300_000))]

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for f in frames:
            await ws.send_bytes(f)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    async with client.ws_connect("/") as ws:
        got = [msg.data async for msg in ws if msg.type == WSMsgType.BINARY]
    assert got == frames
