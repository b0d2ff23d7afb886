"""``python -m bench.ttfa``: time to first audio through the full path vs straight to the emulator.

Starts the emulator (connect delay 300 ms, TTFB 150 ms, real-time pacing), a redis-server, one
worker and the gateway, each its own process, then speaks a few hundred whole utterances through
each target in alternating rounds (so both see the same background load) and prints p50/p90/p99.
A run on the shared 2-core box (2026-11-21, ``--proxy``):

    target       n      p50      p90      p99   (ms, whole utterances, 20 concurrent sessions)
    floor      300    151.8    153.5    156.6
    stack      300    157.0    161.8    170.9
    proxy      300    455.4    461.6    468.7
    +stack             +5.3     +8.4    +14.4
    +proxy           +303.6   +308.1   +312.1
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import baselines, procs, report
from bench.baselines import Target


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table."""
    p = argparse.ArgumentParser(prog="python -m bench.ttfa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utterances", type=int, default=300, help="per target")
    p.add_argument("--concurrency", type=int, default=20, help="concurrent sessions per target")
    p.add_argument("--rounds", type=int, default=3, help="alternations of the targets")
    p.add_argument("--proxy", action="store_true", help="also measure the per-request-socket proxy")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="bench-ttfa-"))
    sampler = procs.Sampler().start()
    stopables: list = []
    ttfa: dict[str, list[float]] = {}
    try:
        emu, emu_url = procs.start_emulator(logs, procs.EmulatorOpts())
        stopables.append(emu)
        stack = procs.start_stack(logs, emu_url, args.workers)
        stopables.append(stack)
        targets = [Target("floor", "elevenlabs", baselines.floor_url(emu_url)),
                   Target("stack", "native", baselines.native_url(stack.base_url))]
        if args.proxy:
            px, px_url = procs.start_proxy(logs, emu_url)
            stopables.append(px)
            targets.append(Target("proxy", "native", px_url))
        per_round = max(1, args.utterances // (args.rounds * args.concurrency))
        for r in range(args.rounds):
            for t in targets:
                res = baselines.drive(t, args.concurrency, utterances=per_round, stream_share=0.0, seed=100 + r,
                                      sampler=sampler, jitter_ms=20.0, stagger_s=0.5)
                ttfa.setdefault(t.name, []).extend(x["ttfa_ms"] for x in res["records"] if x["ttfa_ms"] is not None)
                failed = sum(1 for x in res["records"] if not x["ok"])
                if failed:
                    print(f"{t.name}: {failed} contexts failed")
    finally:
        sampler.stop()
        for s in reversed(stopables):
            s.stop()
    print(f"{'target':<8} {'n':>5} {'p50':>8} {'p90':>8} {'p99':>8}   (ms, whole utterances, "
          f"{args.concurrency} concurrent sessions)")
    for name, vals in ttfa.items():
        print(f"{name:<8} {len(vals):>5} " + " ".join(f"{report.pct(vals, q):>8.1f}" for q in (50, 90, 99)))
    floor = ttfa.get("floor", [])
    for name, vals in ttfa.items():
        if name != "floor" and floor and vals:
            over = [(report.pct(vals, q) or 0.0) - (report.pct(floor, q) or 0.0) for q in (50, 90, 99)]  # both non-empty
            print(f"{'+' + name:<8} {'':>5} " + " ".join(f"{d:>+8.1f}" for d in over))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
