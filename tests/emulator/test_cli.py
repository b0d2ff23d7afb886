"""``python -m emulator`` as a separate process: ready line, serving, control endpoint, clean exit."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import aiohttp
from emulator.synth import decode_text

from tests.emulator.wsclient import read


async def test_cli_serves_and_takes_runtime_faults(http: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", "0",
        "--connect-delay-ms", "20", "--ms-per-char", "30", "--reject-voice-id", "nope",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=4)).decode()
        match = re.fullmatch(r"emulator listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert match, line
        base = match.group(1)
        ws_base = base.replace("http://", "ws://")

        async with http.get(f"{base}/_emulator/config") as resp:
            config = await resp.json()
        assert config["connect_delay_ms"] == 20 and config["reject_voice_ids"] == ["nope"]

        url = f"{ws_base}/v1/text-to-speech/voiceA/multi-stream-input?output_format=pcm_16000"
        async with http.ws_connect(url) as ws:
            await ws.send_json({"text": "from a process", "context_id": "p", "close_context": True})
            got = await read(ws, finals={"p"})
        assert decode_text(got.audio("p"), 16000, ms_per_char=30) == "from a process"

        async with http.post(f"{base}/_emulator/config", json={"close_1008_after_chunks": 0}) as resp:
            assert resp.status == 200
        async with http.ws_connect(url) as ws:
            await ws.send_json({"text": "doomed", "context_id": "p", "flush": True})
            got = await read(ws)
        assert got.close_code == 1008

        async with http.get(f"{base}/_emulator/stats") as resp:
            stats = await resp.json()
        assert stats["ws_connections_opened"] == 2 and stats["faults_fired"] == {"close_1008": 1}
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=4)
    assert proc.returncode == 0, stderr.decode()


async def test_cli_rejects_bad_flags() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulator", "--ms-per-char", "-1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=4)
    assert proc.returncode == 2 and b"ms_per_char" in stderr
