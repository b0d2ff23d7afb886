"""``python -m bench.ttfa``: added time to first audio of both gateway paths, against the floor.

Starts the emulator (connect delay 300 ms, TTFB 150 ms, real-time pacing), a redis-server, one
worker and the gateway, each its own process, then drives three targets in alternating rounds at
each concurrency level (so every target sees the same background load and the same texts):

* ``floor``  — a client on a warm ``multi-stream-input`` socket straight to the emulator;
* ``native`` — whole utterances on the gateway's native socket (``start`` with the text and ``end``);
* ``compat`` — the gateway's ElevenLabs ``multi-stream-input``, as LiveKit and Pipecat drive it:
  context init (``" "``), then the text with ``flush``, then ``close_context``; the text arrives after
  the job was enqueued, so this is the streamed path (input delivered to a running job).

TTFA is measured from the message that makes audio due (native ``start``, compat ``flush``).
The table gives p50/p90/p99 per target and what each gateway path adds over the floor. On this
shared box absolute figures move with the neighbours' load: ``--baseline`` runs an older checkout's
stack in the same rounds, the only fair before/after.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import baselines, procs, report
from bench.baselines import Target


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table."""
    p = argparse.ArgumentParser(prog="python -m bench.ttfa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utterances", type=int, default=300, help="per target and level")
    p.add_argument("--levels", default="20,100", help="comma-separated concurrent sessions per target")
    p.add_argument("--rounds", type=int, default=3, help="alternations of the targets per level")
    p.add_argument("--proxy", action="store_true", help="also measure the per-request-socket proxy")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--baseline", type=Path, help="also run both gateway paths on a stack from this checkout "
                   "(git archive <commit> services shared | tar -x -C DIR): targets native@base, compat@base")
    p.add_argument("--out", help="also write the table and raw TTFAs as JSON here")
    args = p.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x]
    logs = Path(tempfile.mkdtemp(prefix="bench-ttfa-"))
    sampler = procs.Sampler().start()
    stopables: list[Any] = []
    ttfa: dict[int, dict[str, list[float]]] = {}
    failures: dict[int, dict[str, int]] = {}
    try:
        emu, emu_url = procs.start_emulator(logs, procs.EmulatorOpts())
        stopables.append(emu)
        stack = procs.start_stack(logs, emu_url, args.workers)
        stopables.append(stack)
        targets = [Target("floor", "elevenlabs", baselines.floor_url(emu_url)),
                   Target("native", "native", baselines.native_url(stack.base_url)),
                   Target("compat", "elevenlabs", baselines.compat_url(stack.base_url))]
        if args.baseline is not None:
            base = procs.start_stack(logs, emu_url, args.workers, tag="-base", code_root=args.baseline)
            stopables.append(base)
            targets += [Target("native@base", "native", baselines.native_url(base.base_url)),
                        Target("compat@base", "elevenlabs", baselines.compat_url(base.base_url))]
        if args.proxy:
            px, px_url = procs.start_proxy(logs, emu_url)
            stopables.append(px)
            targets.append(Target("proxy", "native", px_url))
        for level in levels:
            per_round = max(1, args.utterances // (args.rounds * level))
            for r in range(args.rounds):
                for t in targets:
                    res = baselines.drive(t, level, utterances=per_round, stream_share=0.0, seed=100 + r,
                                          sampler=sampler, jitter_ms=20.0, stagger_s=0.5)
                    recs = res["records"]
                    ttfa.setdefault(level, {}).setdefault(t.name, []).extend(
                        x["ttfa_ms"] for x in recs if x["ttfa_ms"] is not None)
                    failed = sum(1 for x in recs if not x["ok"]) + len(res["errors"])
                    failures.setdefault(level, {}).setdefault(t.name, 0)
                    failures[level][t.name] += failed
    finally:
        sampler.stop()
        for s in reversed(stopables):
            s.stop()
    table = _table(ttfa, failures)
    print("\n".join(table))
    if args.out:
        Path(args.out).write_text(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                              "table": table, "ttfa_ms": ttfa, "failed": failures}))
    return 0


def _table(ttfa: dict[int, dict[str, list[float]]], failures: dict[int, dict[str, int]]) -> list[str]:
    qs = (50, 90, 99)
    lines = [f"{'target':<12} {'level':>5} {'n':>5} {'p50':>8} {'p90':>8} {'p99':>8} {'failed':>6}   (ms TTFA)"]
    for level, by_target in ttfa.items():
        for name, vals in by_target.items():
            lines.append(f"{name:<12} {level:>5} {len(vals):>5} "
                         + " ".join(f"{_pct(vals, q):>8.1f}" for q in qs)
                         + f" {failures[level].get(name, 0):>6}")
        floor = by_target.get("floor", [])
        for name, vals in by_target.items():
            if name != "floor" and floor and vals:
                lines.append(f"{'+' + name:<12} {level:>5} {'':>5} " + " ".join(
                    f"{_pct(vals, q) - _pct(floor, q):>+8.1f}" for q in qs))
    return lines


def _pct(vals: list[float], q: float) -> float:
    v = report.pct(vals, q)
    return float("nan") if v is None else v


if __name__ == "__main__":
    raise SystemExit(main())
