"""``python -m bench.hops``: where a context's time to first audio goes, hop by hop, and what tracing costs.

Starts the emulator, a redis-server, one worker and the gateway (each its own process, LOG_LEVEL=info
so every context writes its ``context_summary`` line with ``timings``), speaks N whole utterances
through the native protocol and through the ElevenLabs-compatible ``multi-stream-input``, and prints
p50/p99 per hop (shared/hops.py) for each, next to the client-measured TTFA.

``--otlp`` runs a second, identical stack exporting spans over OTLP/HTTP to a sink in this process,
alternating rounds with the first, and prints CPU ms per context of gateway and worker for both
(the cost of spans on). ``--micro`` times the trace bookkeeping alone in this process (µs of CPU per
context: spans off, off with a client traceparent, on with a batch exporter), which the noise of a
shared box cannot blur.

    python -m bench.hops --utterances 200 --concurrency 10
    python -m bench.hops --utterances 200 --concurrency 10 --otlp
    python -m bench.hops --micro

A run on the shared 2-core box (2026-12-05, ``--utterances 120 --concurrency 10 --otlp``, whole
utterances, emulator TTFB 150 ms; 120 contexts per column; spans-on columns alike within noise):

    hop (ms)               native p50   p99   elevenlabs p50   p99
    admission                    0.05  0.12         0.05  0.15
    enqueue                      1.00  5.13         0.99  5.51
    claim                        0.84  7.79         1.04  6.69
    input_delivery               0.65  5.83         0.91  6.70
    upstream_send                0.13  2.03         0.15  1.52
    upstream_first_audio       152.72 160.63       152.47 163.05
    publish                      0.69  6.30         0.70  2.80
    gateway_receive              0.00  1.12         0.00  0.80
    client_send                  0.15  2.86         0.37  1.75
    sum of hops                157.98 168.46       157.97 173.30
    client TTFA                159.63 171.51       159.40 178.82
    CPU ms/context, spans off   20.4 (gw 7.8 + wk 12.6)   22.8 (gw 10.0 + wk 12.8)
    CPU ms/context, OTLP on     22.0 (gw 8.8 + wk 13.3)   24.3 (gw 11.1 + wk 13.3)

``--micro 5000``: trace bookkeeping 25.6 µs CPU per context with spans off, 35.0 with a client
traceparent, 269.4 with spans on and a batch exporter (OTLP's encoding and HTTP come on top: the
~1.5 ms above).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench import baselines, procs, report
from bench.baselines import Target
from shared import hops

HOP_NAMES = list(hops.HOPS)


def summaries(log: Path, start_line: int) -> tuple[list[dict[str, Any]], int]:
    """Completed, uncached ``context_summary`` records of a JSON log from ``start_line`` on; and the line count.

    The first context of every session is the load generator's unmeasured warm-up: left out, as the
    client-side TTFA leaves it out.
    """
    lines = log.read_text(errors="replace").splitlines()
    out = []
    seen: set[str] = set()
    for line in lines[start_line:]:
        if '"context_summary"' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("session_id") not in seen:
            seen.add(rec.get("session_id", ""))
            continue
        if rec.get("outcome") == "completed" and not rec.get("cached") and rec.get("timings"):
            out.append(rec)
    return out, len(lines)


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts and discards (the exporter's cost is what is measured)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return


def start_sink() -> tuple[ThreadingHTTPServer, str]:
    """The discarding OTLP sink on a free port, served from a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def table(rows: dict[str, list[dict[str, Any]]], ttfa: dict[str, list[float]]) -> str:
    """p50/p99 per hop and per target, the hops' sum and the client's TTFA."""
    names = list(rows)
    w = max(10, *(len(n) + 5 for n in names))
    head = f"{'hop (ms)':<22}" + "".join(f"{n + ' p50':>{w}}{n + ' p99':>{w}}" for n in names)
    out = [head]

    def line(label: str, per: dict[str, list[float]]) -> str:
        cells = []
        for n in names:
            vals = per.get(n, [])
            cells += [f"{report.pct(vals, q):>{w}.2f}" if vals else f"{'-':>{w}}" for q in (50, 99)]
        return f"{label:<22}" + "".join(cells)

    for hop in HOP_NAMES:
        per = {n: [r["timings"][hop] for r in rows[n] if hop in r["timings"]] for n in names}
        if any(per.values()):
            out.append(line(hop, per))
    out.append(line("sum of hops", {n: [sum(r["timings"].values()) for r in rows[n]] for n in names}))
    out.append(line("gateway ttfa_ms", {n: [r["ttfa_ms"] for r in rows[n] if r.get("ttfa_ms") is not None]
                                        for n in names}))
    out.append(line("client TTFA", ttfa))
    out.append(f"{'contexts':<22}" + "".join(f"{len(rows[n]):>{w}}{'':>{w}}" for n in names))
    return "\n".join(out)


def dominant(rows: list[dict[str, Any]]) -> str:
    """Hops by share of the summed p50s, largest first."""
    p50 = {hop: report.pct([r["timings"][hop] for r in rows if hop in r["timings"]], 50) or 0.0
           for hop in HOP_NAMES}
    total = sum(p50.values()) or 1.0
    ranked = sorted(p50.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{h} {v:.2f} ms ({100 * v / total:.0f}%)" for h, v in ranked if v > 0)


def run_stacks(args: argparse.Namespace) -> int:
    """The measured run: one stack, or with ``--otlp`` two (spans off / on) in alternating rounds."""
    logs = Path(tempfile.mkdtemp(prefix="bench-hops-"))
    sampler = procs.Sampler().start()
    stopables: list[Any] = []
    sink: ThreadingHTTPServer | None = None
    info = {"LOG_LEVEL": "info"}
    try:
        emu, emu_url = procs.start_emulator(logs, procs.EmulatorOpts(ttfb_ms=args.ttfb_ms))
        stopables.append(emu)
        stacks = {"off": procs.start_stack(logs, emu_url, 1, info, tag="-off")}
        if args.otlp:
            sink, sink_url = start_sink()
            stacks["otlp"] = procs.start_stack(logs, emu_url, 1, {**info, "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url},
                                               tag="-otlp")
        for name, st in stacks.items():
            stopables.append(st)
            sampler.watch(f"gateway-{name}", st.gateway.pid)
            sampler.watch(f"worker-{name}", st.workers[0].pid)
        rows: dict[str, list[dict[str, Any]]] = {}
        ttfa: dict[str, list[float]] = {}
        cpu: dict[str, dict[str, float]] = {}
        contexts: dict[str, int] = {}
        offsets = {name: 0 for name in stacks}
        per_round = max(1, args.utterances // (args.rounds * args.concurrency))
        for r in range(args.rounds):
            if args.floor:  # straight to the emulator: what the upstream leg costs without the stack
                res = baselines.drive(Target("floor", "elevenlabs", baselines.floor_url(emu_url)), args.concurrency,
                                      utterances=per_round, stream_share=args.stream_share, seed=300 + r,
                                      sampler=sampler, jitter_ms=20.0, stagger_s=0.3)
                ttfa.setdefault("floor", []).extend(x["ttfa_ms"] for x in res["records"] if x["ttfa_ms"] is not None)
            for name, st in stacks.items():
                for dialect, url in (("native", baselines.native_url(st.base_url)),
                                     ("elevenlabs", baselines.compat_url(st.base_url))):
                    key = f"{dialect}/{name}" if args.otlp else dialect
                    t0 = time.monotonic()
                    res = baselines.drive(Target(key, dialect, url), args.concurrency, utterances=per_round,
                                          stream_share=args.stream_share, seed=300 + r, sampler=sampler,
                                          jitter_ms=20.0, stagger_s=0.3)
                    t1 = time.monotonic()
                    time.sleep(0.5)  # the last summary lines
                    got, offsets[name] = summaries(st.gateway.log, offsets[name])
                    rows.setdefault(key, []).extend(got)
                    ttfa.setdefault(key, []).extend(x["ttfa_ms"] for x in res["records"] if x["ttfa_ms"] is not None)
                    failed = sum(1 for x in res["records"] if not x["ok"])
                    if failed:
                        print(f"{key}: {failed} contexts failed")
                    win = sampler.window(t0, t1)
                    for proc in ("gateway", "worker"):
                        c = cpu.setdefault(f"{proc}-{name}", {})
                        c[dialect] = c.get(dialect, 0.0) + win.get(f"{proc}-{name}", {}).get("cpu_s", 0.0)
                    contexts[f"{dialect}/{name}"] = contexts.get(f"{dialect}/{name}", 0) + len(res["records"])
    finally:
        sampler.stop()
        for s in reversed(stopables):
            s.stop()
        if sink is not None:
            sink.shutdown()
    print(f"whole utterances, {args.concurrency} concurrent sessions, emulator TTFB {args.ttfb_ms:g} ms, "
          f"stream share {args.stream_share:g}; logs in {logs}")
    print(table(rows, ttfa))
    if "floor" in ttfa:
        print(f"floor (client straight to the emulator) TTFA p50 {report.pct(ttfa['floor'], 50):.2f} "
              f"p99 {report.pct(ttfa['floor'], 99):.2f} (n={len(ttfa['floor'])})")
    for key, rs in rows.items():
        print(f"dominant hops {key}: {dominant(rs)}")
    print("CPU ms per context (psutil, gateway + worker processes; noisy on a shared box):")
    for name in stacks:
        for dialect in ("native", "elevenlabs"):
            n = contexts.get(f"{dialect}/{name}", 0) or 1
            g = cpu.get(f"gateway-{name}", {}).get(dialect, 0.0) * 1000 / n
            w = cpu.get(f"worker-{name}", {}).get(dialect, 0.0) * 1000 / n
            print(f"  spans {name:<5} {dialect:<11} gateway {g:6.2f}  worker {w:6.2f}  total {g + w:6.2f}  (n={n})")
    return 0


async def _one_context(traceparent: dict[str, str]) -> None:
    """The trace work one context does in gateway and worker, without the rest of the path."""
    from gateway.ctxtrace import ContextTrace
    from worker.jobtrace import JobTrace

    from shared import protocol

    ct = ContextTrace(traceparent, time.monotonic())
    ct.enqueue_started()
    spec = protocol.JobSpec("j", "s", "c", "elevenlabs", "v", "m", "pcm_24000", trace=ct.carrier())
    ct.enqueued()
    jt = JobTrace(spec)
    jt.inputs_open()
    jt.text_sent("Hello there.")
    ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    jt.audio_published(ack)
    ack.set_result(1)
    await asyncio.sleep(0)  # the ack's callback
    timings = await jt.timings()
    await jt.finish("completed", **{"tts.provider": "elevenlabs"})
    ct.first_audio(time.monotonic())
    ct.client_sent()
    ct.merge_worker(timings)
    ct.timings()
    _ = ct.trace_id
    ct.finish("completed", None, **{"tts.provider": "elevenlabs", "tts.chunks": 3})
    ct.timings()  # the final event reads it once more


def micro(n: int) -> int:
    """µs of CPU per context for the trace bookkeeping: spans off, off + traceparent, on (batch export)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from shared import tracing

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    parent = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}

    async def timed(carrier: dict[str, str]) -> float:
        for _ in range(200):
            await _one_context(carrier)
        t0 = time.process_time()
        for _ in range(n):
            await _one_context(carrier)
        if provider is not None:
            provider.force_flush()  # the export thread's work is part of the cost (process-wide CPU time)
        return (time.process_time() - t0) / n * 1e6

    results: dict[str, list[float]] = {}
    provider: TracerProvider | None = None
    for _ in range(3):  # interleaved repeats: take the best of each (least disturbed by neighbours)
        tracing.shutdown()
        provider = None
        results.setdefault("spans off", []).append(asyncio.run(timed({})))
        results.setdefault("spans off, client traceparent", []).append(asyncio.run(timed(parent)))
        provider = tracing.install(BatchSpanProcessor(Discard(), max_queue_size=(n + 200) * 12), "bench")
        results.setdefault("spans on (batch export)", []).append(asyncio.run(timed(parent)))
        tracing.shutdown()
    print(f"trace bookkeeping per context, gateway + worker side together ({n} contexts, best of 3):")
    for mode, vals in results.items():
        print(f"  {mode:<32} {min(vals):8.1f} µs CPU")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print its tables."""
    p = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utterances", type=int, default=120, help="per target")
    p.add_argument("--concurrency", type=int, default=10, help="concurrent sessions per target")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the targets")
    p.add_argument("--stream-share", type=float, default=0.0, help="share of LLM-streamed turns (0: whole)")
    p.add_argument("--ttfb-ms", type=float, default=150.0, help="the emulator's time to first byte")
    p.add_argument("--floor", action="store_true", help="also drive a client straight to the emulator each round")
    p.add_argument("--otlp", action="store_true", help="also a stack exporting spans; compare CPU per context")
    p.add_argument("--micro", type=int, nargs="?", const=20000, default=0,
                   help="only time the trace bookkeeping in-process (N contexts)")
    args = p.parse_args(argv)
    if args.micro:
        return micro(args.micro)
    return run_stacks(args)


if __name__ == "__main__":
    raise SystemExit(main())
