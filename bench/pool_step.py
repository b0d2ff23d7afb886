"""A step in demand after a quiet spell: time to first audio with the pool's growth ahead of demand on vs off.

Two ElevenLabs providers share one in-process emulator with a realistic handshake
(``--connect-delay-ms``, default 300) and model latency (``--ttfb-ms``, default 75); one grows ahead
of demand (``POOL_PREGROW=true``, the default), the other does not (the former behaviour). Each round:

1. history: each pool serves ``--step-to`` concurrent contexts once (the recent peak it may remember);
2. both idle ``--idle-s`` seconds (default a minute);
3. per pool in turn (the order alternates between rounds): ``--step-from`` contexts speak long texts,
   then ``--step-to`` minus that many start at once; the time from "text is ready" to the first
   audio chunk is recorded for every context of the step.

The upstream closes an idle socket after ``--inactivity-s`` (default 20, ElevenLabs' own default; the
pool refreshes or retires an idle socket a few seconds before). With the worker default of 180 s, an
idle spell shorter than ~176 s keeps the sockets either way: run ``--inactivity-s 180 --idle-s 200``.

    .venv/bin/python -m bench.pool_step [--rounds 3] [--idle-s 60] [--step-from 5] [--step-to 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from emulator.config import EmulatorConfig
from emulator.runner import DEFAULT_VOICE_ID, RunningEmulator, run_emulator
from prometheus_client import REGISTRY
from worker.providers.base import SynthesisRequest
from worker.providers.elevenlabs import ElevenLabsProvider

from shared.logging import configure
from shared.settings import Settings

TEXT = "Hello, this is a latency probe. "
LONG = "This steady context keeps speaking while the step arrives, sentence after sentence. " * 3
MODES = ("growth ahead", "grow on demand")


def _waits() -> float:
    return REGISTRY.get_sample_value("tts_pool_context_waited_for_handshake_total", {"provider": "elevenlabs"}) or 0.0


async def _speak(provider: ElevenLabsProvider, key: str, text: str) -> float:
    """Open a context, send ``text``, return its time to first audio (and drain it)."""
    stream = await provider.open_stream(SynthesisRequest(key=key, voice_id=DEFAULT_VOICE_ID, model_id="",
                                                         output_format="pcm_24000"))
    try:
        t0 = time.perf_counter()
        await stream.send_text(text, flush=True)
        await stream.end_input()
        ttfa = None
        async for _chunk in stream:
            if ttfa is None:
                ttfa = time.perf_counter() - t0
        assert ttfa is not None, "no audio"
        return ttfa
    finally:
        await stream.cancel()


async def _step(provider: ElevenLabsProvider, tag: str, low: int, high: int) -> tuple[list[float], float]:
    """``low`` steady contexts, then ``high - low`` more at once: every step context's TTFA, handshake waits."""
    before = _waits()
    steady = [asyncio.create_task(_speak(provider, f"{tag}-steady-{i}", LONG)) for i in range(low)]
    await asyncio.sleep(0.5)  # the steady ones are placed and speaking
    step = await asyncio.gather(*(_speak(provider, f"{tag}-step-{i}", TEXT) for i in range(high - low)))
    waited = _waits() - before
    await asyncio.gather(*steady)
    return list(step), waited


def _pct(ms: list[float], q: float) -> float:
    return ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]


def _summary(name: str, samples: list[float], waits: float) -> str:
    ms = sorted(s * 1000 for s in samples)
    return (f"{name:<16} n={len(ms):<4} p50={statistics.median(ms):7.1f} ms  p90={_pct(ms, 0.90):7.1f} ms  "
            f"p99={_pct(ms, 0.99):7.1f} ms  max={ms[-1]:7.1f} ms  placed on a dialling socket: {waits:.0f}")


async def run(emu: RunningEmulator, args: argparse.Namespace) -> dict[str, tuple[list[float], float]]:
    """Every round for both pools, interleaved; TTFA samples and handshake waits per mode."""
    providers = {}
    for mode in MODES:
        settings = Settings.from_env(
            {}, default_voice=DEFAULT_VOICE_ID, pool_min_sockets=1, pool_max_sockets=16, upstream_concurrency=64,
            upstream_slot_wait_s=30.0, upstream_inactivity_timeout_s=args.inactivity_s, log_level="warning",
            pool_pregrow=mode == MODES[0], pool_demand_window_s=args.window_s)
        providers[mode] = ElevenLabsProvider(settings, base_url=emu.http_url)
        await providers[mode].start()
    results: dict[str, tuple[list[float], float]] = {m: ([], 0.0) for m in MODES}
    try:
        for r in range(args.rounds):
            for mode, p in providers.items():
                if not args.no_history:
                    await asyncio.gather(*(_speak(p, f"hist-{r}-{i}", TEXT) for i in range(args.step_to)))
            await asyncio.sleep(args.idle_s)
            order = MODES if r % 2 == 0 else MODES[::-1]
            for mode in order:
                samples, waits = await _step(providers[mode], f"r{r}", args.step_from, args.step_to)
                results[mode] = (results[mode][0] + samples, results[mode][1] + waits)
                sockets = providers[mode].status()["sockets"]
                print(f"round {r + 1} {mode:<16} p50={statistics.median(samples) * 1000:6.1f} ms "
                      f"max={max(samples) * 1000:6.1f} ms waits={waits:.0f} sockets={sockets}", flush=True)
    finally:
        for p in providers.values():
            await p.close()
    return results


async def main() -> None:
    """Run the interleaved rounds and print the percentiles per mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=60.0, help="quiet spell before the step")
    parser.add_argument("--step-from", type=int, default=5)
    parser.add_argument("--step-to", type=int, default=50)
    parser.add_argument("--no-history", action="store_true",
                        help="no history phase: the first round's step is unprecedented (later ones remember it)")
    parser.add_argument("--inactivity-s", type=int, default=20, help="upstream inactivity_timeout (1-180)")
    parser.add_argument("--window-s", type=float, default=300.0, help="POOL_DEMAND_WINDOW_S of the growth pool")
    parser.add_argument("--connect-delay-ms", type=float, default=300.0)
    parser.add_argument("--ttfb-ms", type=float, default=75.0)
    args = parser.parse_args()
    configure(level="warning", fmt="console")
    config = EmulatorConfig(connect_delay_ms=args.connect_delay_ms, ttfb_ms=args.ttfb_ms, realtime_factor=1.0)
    async with run_emulator(config) as emu:
        results = await run(emu, args)
    print(f"emulator: connect_delay_ms={args.connect_delay_ms:g} ttfb_ms={args.ttfb_ms:g}; idle {args.idle_s:g} s, "
          f"inactivity {args.inactivity_s} s, step {args.step_from} -> {args.step_to}, {args.rounds} rounds, "
          f"history={'no' if args.no_history else 'yes'}")
    for mode in MODES:
        print(_summary(mode, *results[mode]))


if __name__ == "__main__":
    asyncio.run(main())
