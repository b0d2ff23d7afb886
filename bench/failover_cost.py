"""What lossless failover costs when nothing fails: time to first audio and worker CPU per audio-second.

Failover holds each partial word back until the chunk that completes it (so a resume starts at a word;
see ``worker/providers/elevenlabs/resume.py``). This runs the same utterances through the pooled
ElevenLabs provider against the in-process emulator with failover on (``FAILOVER_MAX_PER_CONTEXT=2``)
and off (0), alternating one utterance each so machine noise hits both alike, and reports TTFA
percentiles and process CPU ms per second of audio produced. ``--chunk-ms`` is the emulator's chunk
length: the real service's first chunk usually holds several words; short chunks are the worst case.

    .venv/bin/python -m bench.failover_cost [--utterances 200] [--chunk-ms 500] [--ttfb-ms 75]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from emulator.config import EmulatorConfig
from emulator.runner import DEFAULT_VOICE_ID, RunningEmulator, run_emulator
from worker.providers.base import SynthesisRequest
from worker.providers.elevenlabs import ElevenLabsProvider

from shared.logging import configure
from shared.settings import Settings

TEXT = "Hello, this is a latency probe that speaks two short sentences. It ends here. "
RATE = 24000


async def _provider(emu: RunningEmulator, failovers: int) -> ElevenLabsProvider:
    settings = Settings.from_env({}, default_voice=DEFAULT_VOICE_ID, pool_min_sockets=1, pool_max_sockets=4,
                                 upstream_concurrency=64, log_level="warning", failover_max_per_context=failovers)
    provider = ElevenLabsProvider(settings, base_url=emu.http_url)
    await provider.start()
    return provider


async def _one(provider: ElevenLabsProvider, key: str) -> tuple[float, float, int]:
    """(TTFA s, CPU s, audio bytes) of one utterance."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    stream = await provider.open_stream(SynthesisRequest(key=key, voice_id=DEFAULT_VOICE_ID, model_id="",
                                                         output_format=f"pcm_{RATE}"))
    ttfa, nbytes = None, 0
    try:
        await stream.send_text(TEXT, flush=True)
        await stream.end_input()
        async for chunk in stream:
            if ttfa is None:
                ttfa = time.perf_counter() - t0
            nbytes += len(chunk.audio)
    finally:
        await stream.cancel()
    assert ttfa is not None
    return ttfa, time.process_time() - cpu0, nbytes


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def main() -> None:
    """Alternate on/off utterances and print TTFA and CPU figures for each."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--utterances", type=int, default=200)
    ap.add_argument("--chunk-ms", type=float, default=500.0)
    ap.add_argument("--ttfb-ms", type=float, default=75.0)
    args = ap.parse_args()
    configure("warning", "console")
    config = EmulatorConfig(ttfb_ms=args.ttfb_ms, chunk_ms=args.chunk_ms, realtime_factor=20.0)
    async with run_emulator(config) as emu:
        providers = {"on": await _provider(emu, 2), "off": await _provider(emu, 0)}
        ttfa: dict[str, list[float]] = {k: [] for k in providers}
        cpu = dict.fromkeys(providers, 0.0)
        audio = dict.fromkeys(providers, 0)
        try:
            for i in range(args.utterances):
                for name, p in (providers.items() if i % 2 else reversed(providers.items())):
                    t, c, n = await _one(p, f"{name}-{i}")
                    ttfa[name].append(t)
                    cpu[name] += c
                    audio[name] += n
        finally:
            for p in providers.values():
                await p.close()
    print(f"chunk_ms={args.chunk_ms:g} ttfb_ms={args.ttfb_ms:g} utterances={args.utterances} per mode")
    for name in providers:
        seconds = audio[name] / 2 / RATE
        print(f"failover {name:>3}: TTFA p50 {_pct(ttfa[name], 50) * 1000:6.1f} ms  "
              f"p90 {_pct(ttfa[name], 90) * 1000:6.1f} ms  "
              f"CPU {cpu[name] * 1000 / seconds:5.2f} ms per audio-second")


if __name__ == "__main__":
    asyncio.run(main())
