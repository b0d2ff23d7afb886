"""``python -m bench.commands``: Redis commands per context, by kind of context and by command.

Starts the emulator, a redis-server, one worker and the gateway (each its own process), then for
each kind of context runs ``--sessions`` sessions speaking ``--utterances`` each, one after another,
and reads ``INFO commandstats`` before and after: what one context costs Redis, everything included
(enqueue, claim, arq bookkeeping, input delivery, audio frames, upstream permits, usage metering,
and the background heartbeats and monitor checks during the run, shared out over its contexts).
Commands run inside Lua scripts are counted as well as the EVAL/EVALSHA that ran them.

* ``native``  — whole utterances on the native socket (text and end in the ``start``);
* ``compat``  — ``multi-stream-input``: context init, text with flush, close_context;
* ``stream``  — native, text streamed token by token (20–50 tokens/s), flushed at sentence ends.

``--code-root DIR`` runs the services from another checkout (``git archive <commit> services shared``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench import baselines, procs
from bench.baselines import Target

KINDS = {"native": ("native", 0.0), "compat": ("elevenlabs", 0.0), "stream": ("native", 1.0)}


def main(argv: list[str] | None = None) -> int:
    """Run each kind and print commands per context."""
    p = argparse.ArgumentParser(prog="python -m bench.commands", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--utterances", type=int, default=10, help="per session")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--chunk-ms", type=float, default=500.0)
    p.add_argument("--code-root", type=Path, help="run the services from this checkout")
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="bench-commands-"))
    sampler = procs.Sampler().start()
    stopables: list[Any] = []
    out: dict[str, Any] = {}
    try:
        emu, emu_url = procs.start_emulator(logs, procs.EmulatorOpts(chunk_ms=args.chunk_ms))
        stopables.append(emu)
        stack = procs.start_stack(logs, emu_url, 1, code_root=args.code_root)
        stopables.append(stack)
        urls = {"native": baselines.native_url(stack.base_url), "elevenlabs": baselines.compat_url(stack.base_url)}
        for kind in [k for k in args.kinds.split(",") if k]:
            dialect, stream_share = KINDS[kind]
            before = procs.redis_commands(stack.redis.url)
            res = baselines.drive(Target(kind, dialect, urls[dialect], warmup=False), args.sessions,
                                  utterances=args.utterances, stream_share=stream_share, seed=5,
                                  sampler=sampler, jitter_ms=20.0, stagger_s=0.2)
            after = procs.redis_commands(stack.redis.url)
            calls = {c: n - before.get(c, 0) for c, n in after.items() if n > before.get(c, 0)}
            calls.pop("info", None)  # our own reading
            ok = sum(1 for r in res["records"] if r["ok"])
            n = max(1, len(res["records"]))
            audio_s = sum(r["audio_s"] for r in res["records"])
            out[kind] = {"contexts": len(res["records"]), "ok": ok, "total": sum(calls.values()),
                         "per_context": round(sum(calls.values()) / n, 1),
                         "per_audio_s": round(sum(calls.values()) / audio_s, 1) if audio_s else None,
                         "by_command": {c: round(k / n, 2) for c, k in sorted(calls.items(), key=lambda kv: -kv[1])}}
    finally:
        sampler.stop()
        for s in reversed(stopables):
            s.stop()
    for kind, row in out.items():
        top = ", ".join(f"{c} {v:g}" for c, v in list(row["by_command"].items())[:14])
        print(f"{kind:<7} {row['ok']}/{row['contexts']} ok  {row['per_context']:>6} commands/context  "
              f"{row['per_audio_s']} /audio-s   {top}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
