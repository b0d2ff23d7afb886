"""``python -m bench.local_ttfa``: the local voice's time to first audio through the full stack.

Starts a redis-server, one worker on the local Piper voice (``PROVIDERS=local``) and the gateway,
each its own process (as ``make run`` does), then speaks ``--utterances`` whole utterances one at
a time on one native WebSocket: the opening sentence of a support call followed by more text,
``cache: false`` (the phrase cache would answer a repeat without synthesis). For each it records
the time from sending ``start`` to the first audio byte (TTFA), and the worker's own time from the
job's text to the provider's first chunk (``upstream_ttfb_ms`` of its ``job_summary`` line), so the
difference is what the queue hop, publish and gateway cost. It also renders the opening sentence
in-process both as the stream does (piece by piece) and whole, and reports the seam: the pause at
the comma where the first piece ends, in both renderings (silence = 10 ms windows below -40 dBFS).

``--baseline DIR`` also runs a stack from older code (``git archive <commit> services shared |
tar -x -C DIR``) side by side, utterances alternating, so a before/after sees the same load on this
shared machine. Prints p50/p90 and writes ``bench/results/local-ttfa-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench import procs, report

OPENING = "Thanks for calling, how can I help you with your order today?"
FOLLOW_UPS = (
    "I can check where a package is, change the delivery address, or start a return.",
    "If you have your order number handy, read it out and I will look it up.",
    "Our returns are free for thirty days, and refunds reach your card within a week.",
    "You can also ask about a missing item, a damaged box, or a late delivery.",
    "Tell me in a few words what happened, and I will take it from there.",
)
FORMAT = "pcm_24000"
SILENCE_DBFS = -40.0
RESULTS = procs.ROOT / "bench" / "results"


def utterance(i: int) -> str:
    """The opening sentence followed by one of the follow-ups (the first piece is what is timed)."""
    return f"{OPENING} {FOLLOW_UPS[i % len(FOLLOW_UPS)]}"


async def speak(ws: aiohttp.ClientWebSocketResponse, cid: str, text: str) -> tuple[float, int]:
    """One whole utterance; (ms from start to the first audio byte, audio bytes)."""
    began = time.perf_counter()
    await ws.send_json({"type": "start", "context_id": cid, "voice": "joe", "format": FORMAT, "text": text,
                        "end": True, "cache": False})
    first: float | None = None
    nbytes = 0
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            if first is None:
                first = (time.perf_counter() - began) * 1000
            nbytes += len(msg.data)
        elif msg.type == aiohttp.WSMsgType.TEXT:
            ev = json.loads(msg.data)
            if ev.get("type") == "final" and ev.get("context_id") == cid:
                break
            if ev.get("type") == "error":
                raise RuntimeError(f"context {cid} failed: {ev}")
        else:
            raise RuntimeError(f"socket closed: {msg}")
    if first is None:
        raise RuntimeError(f"context {cid} ended without audio")
    return first, nbytes


async def drive(targets: dict[str, str], n: int, warmup: int, pause_s: float) -> dict[str, list[dict[str, Any]]]:
    """Speak ``warmup`` unmeasured then ``n`` measured utterances on each target, one at a time,
    alternating targets so each sees the same background load on this shared machine."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    async with aiohttp.ClientSession() as http:
        sockets: dict[str, aiohttp.ClientWebSocketResponse] = {}
        try:
            for name, base_url in targets.items():
                ws = sockets[name] = await http.ws_connect(base_url.replace("http", "ws", 1) + "/v1/ws",
                                                           max_msg_size=0)
                hello = await ws.receive_json(timeout=30)
                if hello.get("type") != "session":
                    raise RuntimeError(f"unexpected hello from {name}: {hello}")
            for i in range(warmup + n):
                for name, ws in sockets.items():
                    cid = f"{'w' if i < warmup else 'm'}{i}"
                    ttfa, nbytes = await speak(ws, cid, utterance(i))
                    if i >= warmup:
                        rows[name].append({"context_id": cid, "ttfa_ms": round(ttfa, 2),
                                           "audio_s": round(nbytes / 48000, 2)})
                    await asyncio.sleep(pause_s)  # the listener hears it out: one call's turns, not a burst
        finally:
            for ws in sockets.values():
                await ws.close()
    return rows


def worker_ttfb(log: Path) -> dict[str, float]:
    """``upstream_ttfb_ms`` per context id from the worker's JSON ``job_summary`` lines."""
    out: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"job_summary"' not in line:
            continue
        try:
            ev = json.loads(line[line.index("{"):])
        except ValueError:
            continue
        if ev.get("upstream_ttfb_ms") is not None and ev.get("context_id"):
            out[ev["context_id"]] = float(ev["upstream_ttfb_ms"])
    return out


def pauses_ms(pcm: np.ndarray, rate: int, window_ms: int = 10) -> list[tuple[float, float]]:
    """(start ms, length ms) of each silent stretch inside ``pcm`` (int16), edges excluded."""
    win = rate * window_ms // 1000
    frames = pcm[: len(pcm) // win * win].astype(np.float64).reshape(-1, win) / 32768.0
    db = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-12)
    quiet = db < SILENCE_DBFS
    runs: list[tuple[float, float]] = []
    i = 0
    while i < len(quiet):
        if quiet[i]:
            j = i
            while j < len(quiet) and quiet[j]:
                j += 1
            if i > 0 and j < len(quiet):
                runs.append((i * window_ms, (j - i) * window_ms))
            i = j
        else:
            i += 1
    return runs


def seam(text: str = OPENING) -> dict[str, Any]:
    """The pause where the first piece ends vs the pause at the same comma when the sentence is
    synthesized whole, and the loudness either side of it (dBFS over 300 ms of speech)."""
    from worker.providers.piper_engine import get_engine
    from worker.text_split import split_text

    engine = get_engine()
    rate = engine.sample_rate
    pieces = split_text(text)
    whole = np.concatenate([p.pcm for p in engine.synthesize(text, deterministic=True)])
    parts = [np.concatenate([p.pcm for p in engine.synthesize(piece, deterministic=True, continues=piece.continues,
                                                              continued=piece.continued)]) for piece in pieces]
    split = np.concatenate(parts)
    boundary_ms = len(parts[0]) / rate * 1000
    at_seam = next(((s, n) for s, n in pauses_ms(split, rate) if s <= boundary_ms <= s + n), (boundary_ms, 0.0))
    in_whole = min(pauses_ms(whole, rate), key=lambda r: abs(r[0] - at_seam[0]), default=(0.0, 0.0))

    def level(pcm: np.ndarray) -> float:
        return round(float(20 * np.log10(np.sqrt((pcm.astype(np.float64) ** 2).mean()) / 32768 + 1e-12)), 1)

    def either_side(pcm: np.ndarray, pause: tuple[float, float]) -> tuple[float, float]:
        cut, after = round(pause[0] * rate / 1000), round((pause[0] + pause[1]) * rate / 1000)
        span = round(0.3 * rate)
        return level(pcm[max(0, cut - span):cut]), level(pcm[after:after + span])

    before, after = either_side(split, at_seam)
    whole_before, whole_after = either_side(whole, in_whole)
    # How much louder the audio after the seam is than before it, compared with the whole sentence:
    # a piece scaled on its own would show here as a step (Piper's per-run normalization did 6 dB).
    step = round((after - before) - (whole_after - whole_before), 1)
    return {"pieces": list(pieces), "seam_pause_ms": at_seam[1], "whole_pause_ms": in_whole[1],
            "level_before_dbfs": before, "level_after_dbfs": after, "level_step_db": step,
            "whole_ms": round(len(whole) / rate * 1000), "split_ms": round(len(split) / rate * 1000)}


def main(argv: list[str] | None = None) -> int:
    """Run the stack, measure, print and save."""
    p = argparse.ArgumentParser(prog="python -m bench.local_ttfa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utterances", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--pause", type=float, default=0.3, help="seconds between utterances")
    p.add_argument("--label", default="", help="a word for the results file name (e.g. before/after)")
    p.add_argument("--baseline", type=Path, help="a checkout of older code (e.g. `git archive` of a commit) to "
                   "run side by side, utterances alternating, for a before/after on the same load")
    args = p.parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="bench-local-ttfa-"))
    extra = {"PROVIDERS": "local", "DEFAULT_VOICE": "joe", "LOG_LEVEL": "info", "LOCAL_VOICE_THREADS": "2"}
    stacks: dict[str, procs.Stack] = {}
    try:
        if args.baseline is not None:
            stacks["baseline"] = procs.start_stack(logs, "http://127.0.0.1:9", 1, extra_env=extra, tag="-baseline",
                                                   code_root=args.baseline.resolve())
        stacks["stack"] = procs.start_stack(logs, "http://127.0.0.1:9", 1, extra_env=extra)
        rows = asyncio.run(drive({name: s.base_url for name, s in stacks.items()}, args.utterances, args.warmup,
                                 args.pause))
    finally:
        for stack in stacks.values():
            stack.stop()
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name, stack in stacks.items():
        ttfb = worker_ttfb(stack.workers[0].log)
        for row in rows[name]:
            w = ttfb.get(row["context_id"])
            if w is not None:
                row["worker_ms"] = round(w, 2)
                row["hop_ms"] = round(row["ttfa_ms"] - w, 2)
        table[name] = {}
        for key in ("ttfa_ms", "worker_ms", "hop_ms"):
            vals = [r[key] for r in rows[name] if key in r]
            if vals:
                table[name][key] = {"n": len(vals), "p50": round(statistics.median(vals), 1),
                                    "p90": round(report.pct(vals, 90) or 0.0, 1), "min": round(min(vals), 1),
                                    "max": round(max(vals), 1)}
    seam_info = seam()
    print(f"{'':<19} {'n':>4} {'p50':>7} {'p90':>7} {'min':>7} {'max':>7}   (ms, sequential, {FORMAT})")
    for name, keys in table.items():
        for key, s in keys.items():
            print(f"{name + ' ' + key:<19} {s['n']:>4} {s['p50']:>7.1f} {s['p90']:>7.1f} {s['min']:>7.1f} "
                  f"{s['max']:>7.1f}")
    print(f"first piece {seam_info['pieces'][0]!r}: pause after it {seam_info['seam_pause_ms']:.0f} ms "
          f"(whole sentence at that comma {seam_info['whole_pause_ms']:.0f} ms); level either side "
          f"{seam_info['level_before_dbfs']} / {seam_info['level_after_dbfs']} dBFS, "
          f"step vs the whole sentence {seam_info['level_step_db']:+.1f} dB")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"local-ttfa-{stamp}{'-' + re.sub(r'[^A-Za-z0-9_-]', '', args.label) if args.label else ''}.json"
    out = RESULTS / name
    out.write_text(json.dumps({"text": utterance(0), "format": FORMAT, "summary": table, "seam": seam_info,
                               "baseline": str(args.baseline) if args.baseline else None,
                               "rows": rows, "machine": procs.machine_facts(),
                               "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}, indent=1))
    print(f"wrote {out.relative_to(procs.ROOT)} (process logs in {logs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
