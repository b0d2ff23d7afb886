"""stream-input: BOS, text, flush, keep-alive, EOS -> remaining audio, isFinal, close 1000."""

from __future__ import annotations

import asyncio

import aiohttp
from emulator.config import EmulatorConfig
from emulator.runner import RunningEmulator
from emulator.synth import decode_text

from tests.emulator.wsclient import read


async def test_happy_path_and_eos_close_1000(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.stream_input_url(output_format="pcm_22050")) as ws:
        # The SDK's convert_realtime sequence.
        await ws.send_json(
            {
                "text": " ",
                "try_trigger_generation": True,
                "voice_settings": None,
                "generation_config": {"chunk_length_schedule": [50]},
            }
        )
        for part in ("Hello ", "from ", "the ", "single ", "stream ", "socket. "):
            await ws.send_json({"text": part, "try_trigger_generation": True})
        await ws.send_json({"text": ""})
        got = await read(ws)
    assert got.closed and got.close_code == 1000
    assert decode_text(got.audio(), 22050) == "Hello from the single stream socket. "
    assert got.frames[-1] == {"audio": None, "isFinal": True, "normalizedAlignment": None, "alignment": None}
    assert all("contextId" not in f for f in got.frames)
    assert emu.stats.messages_received["bos"] == 1 and emu.stats.messages_received["eos"] == 1


async def test_flush_keeps_the_socket_open(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.stream_input_url(output_format="pcm_16000")) as ws:
        await ws.send_json({"text": " "})
        await ws.send_json({"text": "flushed early", "flush": True})
        got = await read(ws, timeout=0.4)
        assert decode_text(got.audio(), 16000) == "flushed early"
        assert not got.closed and not any(f.get("isFinal") for f in got.frames)
        await ws.send_json({"text": " more"})
        await ws.send_json({"text": ""})
        got = await read(ws)
    assert decode_text(got.audio(), 16000) == " more"
    assert got.close_code == 1000


async def test_eos_flushes_buffered_text_without_trailing_space(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(emu.stream_input_url(output_format="pcm_16000")) as ws:
        await ws.send_json({"text": " "})
        await ws.send_json({"text": "no space at the end"})
        got = await read(ws, timeout=0.3)
        assert got.audio_frames() == []  # under the 120-character first threshold
        await ws.send_json({"text": ""})
        got = await read(ws)
    assert decode_text(got.audio(), 16000) == "no space at the end"


async def test_inactivity_closes_1008(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.stream_input_url(inactivity_timeout=0.25)) as ws:
        await ws.send_json({"text": " "})
        got = await read(ws, timeout=1.5)
    assert got.close_code == 1008
    assert got.errors()[0]["message"].startswith("Have not received a new text input within the timeout")


async def test_single_space_keeps_alive(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.stream_input_url(inactivity_timeout=0.25, output_format="pcm_8000")) as ws:
        await ws.send_json({"text": " "})
        for _ in range(6):
            await asyncio.sleep(0.1)
            await ws.send_json({"text": " "})
        await ws.send_json({"text": "alive"})
        await ws.send_json({"text": ""})
        got = await read(ws)
    assert got.close_code == 1000
    assert decode_text(got.audio(), 8000) == "alive"


async def test_api_key_in_bos_message(http: aiohttp.ClientSession) -> None:
    from emulator.runner import run_emulator

    async with run_emulator(EmulatorConfig(api_key="sekret")) as emu:
        async with http.ws_connect(emu.stream_input_url(output_format="pcm_16000")) as ws:
            await ws.send_json({"text": " ", "xi-api-key": "sekret"})
            await ws.send_json({"text": "authorised"})
            await ws.send_json({"text": ""})
            got = await read(ws)
        assert got.close_code == 1000 and decode_text(got.audio(), 16000) == "authorised"
        async with http.ws_connect(emu.stream_input_url()) as ws:
            await ws.send_json({"text": " ", "xi_api_key": "wrong"})
            got = await read(ws)
        assert got.close_code == 1008 and got.errors()[0]["error"] == "invalid_api_key"
