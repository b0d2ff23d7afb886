"""Time to first audio: a warm ElevenLabs socket pool vs. a fresh socket per context.

Runs the emulator in-process with a realistic handshake (``--connect-delay-ms``, default 300) and
model latency (``--ttfb-ms``, default 75), then measures, for each context, the time from "text is
ready" to the first audio chunk:

* ``warm pool``: :class:`ElevenLabsProvider` with prewarmed sockets (open_stream + send_text + flush);
* ``socket per context``: dial ``multi-stream-input``, init, send, flush, close — what a client
  without a pool pays every time.

    .venv/bin/python -m bench.pool_ttfa [--contexts 40] [--connect-delay-ms 300] [--ttfb-ms 75]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import time

import aiohttp
from emulator.config import EmulatorConfig
from emulator.runner import DEFAULT_VOICE_ID, RunningEmulator, run_emulator
from worker.providers.base import SynthesisRequest
from worker.providers.elevenlabs import ElevenLabsProvider

from shared.logging import configure
from shared.settings import Settings

TEXT = "Hello, this is a latency probe. "


async def warm_pool(emu: RunningEmulator, n: int, concurrency: int) -> list[float]:
    """TTFA per context through the pooled provider (sockets prewarmed before timing starts)."""
    settings = Settings.from_env({}, default_voice=DEFAULT_VOICE_ID, pool_min_sockets=max(1, concurrency // 5),
                                 pool_max_sockets=16, upstream_concurrency=64, log_level="warning")
    provider = ElevenLabsProvider(settings, base_url=emu.http_url)
    await provider.start()
    sem = asyncio.Semaphore(concurrency)
    try:
        async def one(i: int) -> float:
            async with sem:
                t0 = time.perf_counter()
                stream = await provider.open_stream(SynthesisRequest(
                    key=f"warm-{i}", voice_id=DEFAULT_VOICE_ID, model_id="", output_format="pcm_24000"))
                try:
                    await stream.send_text(TEXT, flush=True)
                    await stream.end_input()
                    ttfa = None
                    async for _chunk in stream:
                        if ttfa is None:
                            ttfa = time.perf_counter() - t0
                    assert ttfa is not None
                    return ttfa
                finally:
                    await stream.cancel()

        return list(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        await provider.close()


async def socket_per_context(emu: RunningEmulator, n: int, concurrency: int) -> list[float]:
    """TTFA per context when every context dials its own socket."""
    url = emu.multi_stream_url(model_id="eleven_flash_v2_5", output_format="pcm_24000")
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> float:
            async with sem:
                t0 = time.perf_counter()
                async with session.ws_connect(url, max_msg_size=16 * 1024 * 1024) as ws:
                    cid = f"cold-{i}"
                    for msg in ({"text": " ", "context_id": cid}, {"text": TEXT, "context_id": cid, "flush": True},
                                {"context_id": cid, "close_context": True}):
                        await ws.send_str(json.dumps(msg))
                    ttfa = None
                    async for raw in ws:
                        frame = json.loads(raw.data)
                        if frame.get("audio") and ttfa is None:
                            base64.b64decode(frame["audio"])
                            ttfa = time.perf_counter() - t0
                        if frame.get("isFinal"):
                            break
                    assert ttfa is not None
                    return ttfa

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def _summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{name:<20} n={len(ms):<4} p50={statistics.median(ms):7.1f} ms  p95={p95:7.1f} ms  max={ms[-1]:7.1f} ms"


async def main() -> None:
    """Run both measurements and print their percentiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=1, help="contexts in flight at once")
    parser.add_argument("--connect-delay-ms", type=float, default=300.0)
    parser.add_argument("--ttfb-ms", type=float, default=75.0)
    args = parser.parse_args()
    configure(level="warning", fmt="console")
    config = EmulatorConfig(connect_delay_ms=args.connect_delay_ms, ttfb_ms=args.ttfb_ms)
    async with run_emulator(config) as emu:
        warm = await warm_pool(emu, args.contexts, args.concurrency)
        cold = await socket_per_context(emu, args.contexts, args.concurrency)
    print(f"emulator: connect_delay_ms={args.connect_delay_ms:g} ttfb_ms={args.ttfb_ms:g} "
          f"concurrency={args.concurrency}")
    print(_summary("warm pool", warm))
    print(_summary("socket per context", cold))
    print(f"p50 saved by the pool: {(statistics.median(cold) - statistics.median(warm)) * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
