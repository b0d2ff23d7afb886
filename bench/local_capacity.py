"""How many concurrent real-time streams the local Piper voice sustains on this machine.

Run: ``.venv/bin/python -m bench.local_capacity [--threads 2] [--seconds 10] [--max 64]``

Each trial opens N streams at once through the worker's own provider (the need scheduler and its
threads, no refusal), gives each about ``--seconds`` of speech, and plays every stream back in
real time from its first chunk: a stream underruns when a chunk arrives after everything before it
finished playing. A trial passes when no stream goes silent for more than ``--tolerance`` after its
first audio. The answer is the largest passing N (found by doubling, then bisection), also per core,
next to the provider's own measured capacity (real-time factor x threads x headroom) for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from worker.providers.base import SynthesisRequest
from worker.providers.local import LocalProvider

FMT = "pcm_16000"
BYTES_PER_S = 32000
SENTENCE = "This is one of many streams that the local voice speaks at the same time, in real time. "


async def _stream(provider: LocalProvider, key: str, text: str) -> tuple[float, float]:
    """(first-audio wait, worst silence after first audio) of one stream."""
    began = time.monotonic()
    stream = await provider.open_stream(SynthesisRequest(key=key, voice_id="joe", model_id="piper",
                                                         output_format=FMT))
    await stream.send_text(text)
    await stream.end_input()
    start: float | None = None
    played = worst = 0.0
    first = 0.0
    async for chunk in stream:
        now = time.monotonic()
        if start is None:
            start, first = now, now - began
        late = (now - start) - played
        if late > 0:
            worst = max(worst, late)
            start += late
        played += len(chunk.audio) / BYTES_PER_S
    return first, worst


async def trial(provider: LocalProvider, n: int, text: str) -> dict[str, float]:
    """Run ``n`` streams at once; the worst first-audio wait and the worst silence among them."""
    results = await asyncio.gather(*(_stream(provider, f"s{i}", text) for i in range(n)))
    return {"streams": n, "worst_first_audio_s": round(max(r[0] for r in results), 2),
            "worst_silence_s": round(max(r[1] for r in results), 2)}


async def main() -> None:
    """Find the largest N that stays real-time and print the result as JSON lines."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seconds", type=float, default=10.0, help="speech per stream")
    ap.add_argument("--tolerance", type=float, default=0.25, help="longest silence that still counts as real time")
    ap.add_argument("--max", type=int, default=64)
    args = ap.parse_args()
    text = SENTENCE * max(1, round(args.seconds / 5.0))  # one sentence is about 5 s of speech
    provider = LocalProvider(threads=args.threads, max_streams=10_000)
    await provider.start()
    measured = LocalProvider(threads=args.threads)
    await measured.start()
    try:
        ok, bad, n = 0, args.max + 1, 1
        while n < bad and n <= args.max:  # doubling until a trial fails, then bisection
            r = await trial(provider, n, text)
            passed = r["worst_silence_s"] <= args.tolerance
            print(json.dumps({**r, "real_time": passed}), flush=True)
            if passed:
                ok = n
                n = n * 2 if bad > args.max else (n + bad) // 2
            else:
                bad = n
                n = (ok + bad) // 2
            if n <= ok:
                break
        cores = os.cpu_count() or 1
        print(json.dumps({"real_time_streams": ok, "cores": cores, "per_core": round(ok / cores, 1),
                          "threads": args.threads, "realtime_factor_per_run": measured.realtime_factor,
                          "provider_capacity": measured.capacity, "tolerance_s": args.tolerance}), flush=True)
    finally:
        await provider.close()
        await measured.close()


if __name__ == "__main__":
    asyncio.run(main())
