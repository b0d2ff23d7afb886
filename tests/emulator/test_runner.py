"""The in-process runner: free ports, shutdown with sockets open, stats reset semantics."""

from __future__ import annotations

import asyncio

import aiohttp
from emulator.config import EmulatorConfig
from emulator.runner import run_emulator

from tests.emulator.wsclient import read


async def test_two_emulators_get_different_ports() -> None:
    async with run_emulator() as a, run_emulator() as b:
        assert a.port != b.port and a.ws_url.startswith("ws://127.0.0.1:")


async def test_shutdown_closes_open_sockets_with_1001(http: aiohttp.ClientSession) -> None:
    async with run_emulator(EmulatorConfig()) as emu:
        ws = await http.ws_connect(emu.multi_stream_url())
        await ws.send_json({"text": " ", "context_id": "c"})
        await emu.wait_until(lambda s: s.contexts_active == 1)
        reader = asyncio.create_task(read(ws, timeout=3))  # a live client is reading when the server stops
    got = await reader
    await ws.close()
    assert got.close_code == 1001 and got.close_reason == "Server shutting down"


async def test_stats_reset_keeps_gauges(http: aiohttp.ClientSession) -> None:
    async with run_emulator() as emu:
        async with http.ws_connect(emu.multi_stream_url()) as ws:
            for i in range(3):
                await ws.send_json({"text": " ", "context_id": f"c{i}"})
            await emu.wait_until(lambda s: s.contexts_active == 3)
            emu.reset_stats()
            assert emu.stats.ws_connections_opened == 0 and emu.stats.messages_received == {}
            assert emu.stats.ws_connections_active == 1 and emu.stats.contexts_active == 3
            assert emu.stats.max_active_contexts_per_socket == 3
        await emu.wait_until(lambda s: s.ws_connections_active == 0 and s.contexts_active == 0)
        assert emu.stats.upstream_requests == 0  # nothing new since the reset
