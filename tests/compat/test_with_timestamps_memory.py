"""``/with-timestamps`` streams its one JSON object: a long clip never sits whole in the gateway (issue 12.7).

Gateway, worker and emulator are separate processes; the gateway's RSS is sampled while a client
downloads the response of 10,000 characters of pcm_48000 (600 s of audio: 57.6 MB of PCM, 77 MB of
JSON). Building the object in memory grew the gateway by ~190 MB; streamed, it stays flat.
"""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import psutil

from tests.faults.support import VOICE, start_stack
from tests.support.procs import (
    Procs,
    procs,  # noqa: F401  (the fixture)
)

SENTENCE = "Every word of a long reading stays in order. "
TEXT = (SENTENCE * (10_000 // len(SENTENCE) + 1))[:10_000]
MS_PER_CHAR = 60.0  # the emulator's synthetic voice
RATE = 48000


async def _peak_rss_mb(pid: int, stop: asyncio.Event) -> float:
    proc, peak = psutil.Process(pid), 0.0
    while not stop.is_set():
        peak = max(peak, proc.memory_info().rss / 2**20)
        await asyncio.sleep(0.02)
    return peak


async def test_a_long_clip_streams_through_a_flat_gateway(procs: Procs, redis_url: str) -> None:  # noqa: F811
    stack = await start_stack(procs, redis_url)
    url = f"{stack.base}/v1/text-to-speech/{VOICE}/with-timestamps?output_format=pcm_{RATE}"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"text": "Warm up the path once."}) as r:
            assert r.status == 200
            await r.read()
        baseline = psutil.Process(stack.gateway.pid).memory_info().rss / 2**20
        stop = asyncio.Event()
        sampler = asyncio.create_task(_peak_rss_mb(stack.gateway.pid, stop))
        async with http.post(url, json={"text": TEXT}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
            assert "Content-Length" not in r.headers  # written as it comes
            body = await r.read()
        stop.set()
        peak = await sampler

    obj = json.loads(body)  # valid JSON, as one object
    assert set(obj) == {"audio_base64", "alignment", "normalized_alignment"}
    audio = base64.b64decode(obj["audio_base64"], validate=True)
    assert len(audio) / 2 / RATE == (len(TEXT) * MS_PER_CHAR / 1000)
    al = obj["alignment"]
    assert "".join(al["characters"]) == TEXT
    starts, ends = al["character_start_times_seconds"], al["character_end_times_seconds"]
    assert starts == sorted(starts) and ends[-1] == round(len(TEXT) * MS_PER_CHAR / 1000, 3)
    growth = peak - baseline
    print(f"with-timestamps 10k chars pcm_48000: body {len(body) / 2**20:.1f} MiB, gateway RSS {baseline:.0f} -> "
          f"peak {peak:.0f} MiB (+{growth:.1f})")
    # The body is 77 MB; the gateway may hold the alignment text (~0.2 MB) and a few chunks in flight.
    assert growth < 30, f"gateway RSS grew {growth:.1f} MiB while streaming a {len(body) / 2**20:.0f} MiB body"
