"""``python -m bench.run [--short]``: baselines and the stack side by side, a concurrency sweep, memory.

One emulator process (connect delay, TTFB and real-time pacing as configured) serves every target.
For each concurrency level, every target runs in turn with the same texts: the floor (warm direct
socket), the per-request-socket proxy, the stack with one and with two workers, with two gateways
(sessions alternating between them), the compatible endpoint and the phrase cache when the gateway
has them. Results go to ``bench/results/<timestamp>-<mode>/`` and ``bench/results/latest/``: results.json, report.md, PNGs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import baselines, plots, procs, profile, report
from bench.baselines import Target

RESULTS = Path(__file__).resolve().parent / "results"
SHORT_LEVELS = [10, 50]
FULL_LEVELS = [1, 10, 50, 100, 200, 400, 700, 1000]
ALL_TARGETS = ["floor", "proxy", "stack-1w", "stack-2w", "stack-2g", "compat-1w", "cache-1w"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--short", action="store_true", help="a few minutes: low levels only")
    p.add_argument("--levels", help="comma-separated concurrency levels (overrides the mode's)")
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma-separated subset of targets")
    p.add_argument("--jitter-ms", type=float, default=20.0, help="player's jitter allowance before an underrun")
    p.add_argument("--stream-share", type=float, default=0.3, help="share of LLM-streamed turns")
    p.add_argument("--min-contexts", type=int, help="contexts per level and target, at least (60; short 20)")
    p.add_argument("--max-utterances", type=int, help="utterances per session, at most (8; short 3)")
    p.add_argument("--idle-sessions", type=int, help="idle sessions for the memory test (0 = skip)")
    p.add_argument("--connect-delay-ms", type=float, default=300.0)
    p.add_argument("--ttfb-ms", type=float, default=150.0)
    p.add_argument("--realtime-factor", type=float, default=1.0)
    p.add_argument("--chunk-ms", type=float, default=500.0)
    p.add_argument("--handshake-rate", type=float, help="emulator: WS handshakes admitted per second (429 beyond)")
    p.add_argument("--handshake-burst", type=int, help="emulator: handshakes admitted at once before the rate applies")
    p.add_argument("--max-concurrent-requests", type=int,
                   help="emulator: generations at once (too_many_concurrent_requests beyond)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--verify-share", type=float, default=0.02,
                   help="share of contexts whose audio is decoded back to text after the run (content check)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy every process of each target and the load generators; summaries in <out>/profiles/")
    p.add_argument("--code-root", type=Path,
                   help="run gateway and workers from this checkout (git archive <commit> services shared | tar -x -C DIR)")
    p.add_argument("--out", help="output directory (default bench/results/<timestamp>-<mode>)")
    return p.parse_args(argv)


async def _probe_compat(base_url: str) -> str | None:
    """None when the gateway serves the compatible WebSocket, else why not."""
    try:
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(baselines.compat_url(base_url), timeout=aiohttp.ClientWSTimeout(ws_close=2)) as ws:
            await ws.send_str(json.dumps({"text": " ", "context_id": "probe"}))
            await ws.send_str(json.dumps({"text": "Hi. ", "context_id": "probe", "flush": True}))
            await ws.send_str(json.dumps({"context_id": "probe", "close_context": True}))
            async with asyncio.timeout(10):
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return f"closed: {msg.type.name}"
                    ev = json.loads(msg.data)
                    if ev.get("isFinal"):
                        return None
                    if "error" in ev:
                        return f"error: {ev}"[:120]
        return "no final"
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return f"not served ({type(e).__name__}: {str(e)[:80]})"


async def _probe_cache(base_url: str) -> str | None:
    """None when a repeated ``cache: true`` utterance comes back ``cached``, else why not."""
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(baselines.native_url(base_url)) as ws:
            await ws.receive_json(timeout=5)
            cached = None
            for i in range(3):
                await ws.send_str(json.dumps({"type": "start", "context_id": f"p{i}", "text": baselines.CACHE_TEXT,
                                              "end": True, "cache": True, "format": "pcm_24000"}))
                async with asyncio.timeout(20):
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            ev = json.loads(msg.data)
                            if ev.get("type") in ("final", "error"):
                                cached = ev.get("cached")
                                break
                        elif msg.type != aiohttp.WSMsgType.BINARY:
                            return f"closed: {msg.type.name}"
                await asyncio.sleep(0.3)
            return None if cached else "a repeated utterance was not served from the cache"
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return f"probe failed ({type(e).__name__})"


class Bench:
    """Processes, targets and results of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode = "short" if args.short else "full"
        self.levels = [int(x) for x in args.levels.split(",")] if args.levels else (
            SHORT_LEVELS if args.short else FULL_LEVELS)
        self.wanted = [t for t in args.targets.split(",") if t]
        if args.min_contexts is None:
            args.min_contexts = 20 if args.short else 60
        if args.max_utterances is None:
            args.max_utterances = 3 if args.short else 8
        self.started = datetime.now(UTC)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        self.out = Path(args.out) if args.out else RESULTS / f"{stamp}-{self.mode}"
        self.logs = Path(tempfile.mkdtemp(prefix=f"bench-logs-{stamp}-"))
        self.sampler = procs.Sampler().start()
        self.emu_opts = procs.EmulatorOpts(args.connect_delay_ms, args.ttfb_ms, args.realtime_factor, args.chunk_ms,
                                           handshake_rate=args.handshake_rate, handshake_burst=args.handshake_burst,
                                           max_concurrent_requests=args.max_concurrent_requests)
        self.stopables: list[Any] = []
        self.targets: list[Target] = []
        self.notes: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self.stack1: procs.Stack | None = None
        self.redis_urls: dict[str, str] = {}  # sampler name of a redis-server -> its URL
        self.machine = procs.machine_facts()

    def say(self, text: str) -> None:
        """Progress on stdout."""
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def setup(self) -> None:
        """Start the emulator, the proxy and the stacks the wanted targets need."""
        emu, emu_url = procs.start_emulator(self.logs, self.emu_opts)
        self.stopables.append(emu)
        self.sampler.watch("emulator", emu.pid)
        self.say(f"emulator {emu_url} ({self.emu_opts}); logs in {self.logs}")
        if "floor" in self.wanted:
            self.targets.append(Target("floor", "elevenlabs", baselines.floor_url(emu_url), processes=("emulator",)))
        if "proxy" in self.wanted:
            px, px_url = procs.start_proxy(self.logs, emu_url)
            self.stopables.append(px)
            self.sampler.watch("proxy", px.pid)
            self.targets.append(Target("proxy", "native", px_url, processes=("proxy", "emulator")))
        if any(t in self.wanted for t in ("stack-1w", "compat-1w", "cache-1w")):
            self.stack1 = st = procs.start_stack(self.logs, emu_url, 1, code_root=self.args.code_root)
            self.stopables.append(st)
            self._watch_stack(st, "")
            names = ("gateway", "worker0", "redis", "emulator")
            if "stack-1w" in self.wanted:
                self.targets.append(Target("stack-1w", "native", baselines.native_url(st.base_url), processes=names))
            if "compat-1w" in self.wanted:
                why = asyncio.run(_probe_compat(st.base_url))
                if why is None:
                    self.targets.append(Target("compat-1w", "elevenlabs", baselines.compat_url(st.base_url),
                                               processes=names))
                else:
                    self.notes.append(f"compat-1w skipped: the gateway's ElevenLabs-compatible WebSocket is {why}")
            if "cache-1w" in self.wanted:
                why = asyncio.run(_probe_cache(st.base_url))
                if why is None:
                    self.targets.append(Target("cache-1w", "native", baselines.native_url(st.base_url), cache=True,
                                               processes=names))
                else:
                    self.notes.append(f"cache-1w skipped: {why}")
        if "stack-2w" in self.wanted:
            st2 = procs.start_stack(self.logs, emu_url, 2, tag="-2w", code_root=self.args.code_root)
            self.stopables.append(st2)
            self._watch_stack(st2, "-2w")
            self.targets.append(Target("stack-2w", "native", baselines.native_url(st2.base_url),
                                       processes=("gateway-2w", "worker0-2w", "worker1-2w", "redis-2w", "emulator")))
        if "stack-2g" in self.wanted:
            st3 = procs.start_stack(self.logs, emu_url, 1, tag="-2g", code_root=self.args.code_root, gateways=2)
            self.stopables.append(st3)
            self._watch_stack(st3, "-2g")
            urls = [baselines.native_url(u) for u in st3.base_urls]
            self.targets.append(Target("stack-2g", "native", urls[0], more_urls=tuple(urls[1:]),
                                       processes=("gateway0-2g", "gateway1-2g", "worker0-2g", "redis-2g", "emulator")))
        for n in self.notes:
            self.say(n)

    def _watch_stack(self, st: procs.Stack, tag: str) -> None:
        self.redis_urls[f"redis{tag}"] = st.redis.url
        for g in st.gateways:
            self.sampler.watch(g.name, g.pid)
        for i, w in enumerate(st.workers):
            self.sampler.watch(f"worker{i}{tag}", w.pid)
        if st.redis.proc is not None:
            self.sampler.watch(f"redis{tag}", st.redis.proc.pid)

    def sweep(self) -> None:
        """Every level, every target in turn; a target that collapsed is not pushed further."""
        a = self.args
        collapsed: set[str] = set()
        for level in self.levels:
            utts = baselines.utterances_for(level, a.min_contexts, a.max_utterances)
            duration = baselines.duration_for(level, a.min_contexts, 12.0 if a.short else 20.0,
                                              24.0 if a.short else 45.0)
            for t in self.targets:
                if t.name in collapsed:
                    continue
                prof = self._profiler(t.name, level, t.processes)
                redis_before = {n: procs.redis_commands(u) for n, u in self.redis_urls.items() if n in t.processes}
                t0 = time.monotonic()
                res = baselines.drive(t, level, utterances=utts, stream_share=a.stream_share, seed=a.seed + level,
                                      sampler=self.sampler, jitter_ms=a.jitter_ms, stagger_s=min(2.0, 0.2 + level / 500),
                                      duration_s=duration, verify_share=a.verify_share, on_spawn=prof.start if prof else None)
                t1 = time.monotonic()
                if prof is not None:
                    prof.stop()
                row = {"target": t.name, "level": level, "duration_s": duration,
                       **report.summarize(res["records"], a.jitter_ms),
                       "connect_failed": res["connect_failed"], "warmup_failed": res["warmup_failed"],
                       "loadgen_errors": res["errors"], "phase_s": {k: round(res.get(k, 0.0), 1) for k in
                                                                    ("connect_s", "warmup_s", "measured_s")}}
                if res.get("connect_errors"):
                    row["connect_errors"] = sorted(set(res["connect_errors"]))[:3]
                if res.get("warmup_errors"):
                    row["warmup_errors"] = sorted(set(res["warmup_errors"]))[:3]
                # The measured phase is the loadgen's last ``measured_s`` seconds (connect and warm-up excluded).
                # ``post_s`` (closing, content checks, writing results) came after it and is left out.
                end = t1 - res.get("post_s", 0.0)
                win = self.sampler.window(max(t0, end - res.get("measured_s", t1 - t0) - 0.5), end)
                row["box"] = win.pop("box", {})
                row["resources"] = {n: v for n, v in win.items() if n in t.processes or n.startswith("loadgen")}
                audio_s = row["audio_s"] or 0.0
                for v in row["resources"].values():
                    v["cpu_ms_per_audio_s"] = round(1000 * v["cpu_s"] / audio_s, 2) if audio_s else None
                    # A real-time stream delivers one audio-second per second: one core carries 1000 / (ms/s).
                    v["streams_per_core"] = (round(1000 * audio_s / (1000 * v["cpu_s"])) if audio_s and v["cpu_s"] > 0
                                             else None)
                # Commands Redis served for the whole level (connect and warm-up included): per context
                # and per audio-second, the load one Redis carries for what this target delivers.
                for n, before in redis_before.items():
                    after = procs.redis_commands(self.redis_urls[n])
                    calls = {c: k - before.get(c, 0) for c, k in after.items() if k > before.get(c, 0)}
                    used = sum(calls.values())
                    row["redis_commands"] = {"total": used,
                                             "per_context": round(used / max(1, row["contexts"]), 1),
                                             "per_audio_s": round(used / audio_s, 1) if audio_s else None,
                                             "by_command": dict(sorted(calls.items(), key=lambda kv: -kv[1]))}
                self.rows.append(row)
                self.say(f"{t.name:>9} @ {level:>5}: {row['contexts']} ctx, done {row['completion_pct']}%, TTFA p50/p90/p99 "
                         f"{row['ttfa_p50']}/{row['ttfa_p90']}/{row['ttfa_p99']} ms, underrun ctx "
                         f"{row['underrun_contexts']}, late p99 {row['late_p99_ms']} ms, errors {row['errors']}, "
                         f"cpu {_cpu(row['resources'])}, box {row['box']}")
                # A target that failed most contexts is not pushed further (it would only burn time);
                # the floor always runs, every other target is compared against it.
                bad = (row["contexts"] == 0 or (row["completion_pct"] or 0) < 50 or (row["underrun_pct"] or 0) > 90)
                if bad and t.name != "floor":
                    collapsed.add(t.name)
                    self.notes.append(f"{t.name} stopped after {level} streams: it collapsed there "
                                      f"(done {row['completion_pct']}%, underrun {row['underrun_pct']}%)")
                time.sleep(1.0)

    def _profiler(self, target: str, level: int, names: tuple[str, ...]) -> profile.Profiler | None:
        if not self.args.profile:
            return None
        prof = profile.Profiler(self.out / "profiles" / f"{target}-{level}")
        for name in names:
            pid = self.sampler.pid(name)
            if pid is not None:
                prof.start(name, pid)
        return prof

    def idle_memory(self) -> dict[str, Any] | None:
        """Gateway RSS per idle session on the 1-worker stack."""
        n = self.args.idle_sessions if self.args.idle_sessions is not None else (200 if self.args.short else 1000)
        if not n or self.stack1 is None:
            return None
        m = baselines.idle_memory(baselines.native_url(self.stack1.base_url), n, self.stack1.gateway.pid)
        self.say(f"idle memory: {m}")
        return m

    def finish(self, idle: dict[str, Any] | None) -> dict[str, Any]:
        """Compare against the floor, find capacity, write everything."""
        floors = {r["level"]: r for r in self.rows if r["target"] == "floor"}
        for r in self.rows:
            if r["target"] != "floor":
                r.update(report.added_over_floor(r, floors.get(r["level"])))
        e = self.emu_opts
        result = {"started_at": self.started.isoformat(timespec="seconds"), "mode": self.mode,
                  "machine": self.machine, "jitter_ms": self.args.jitter_ms,
                  "stream_share": self.args.stream_share, "levels": self.levels,
                  "targets": [t.name for t in self.targets],
                  "emulator": f"connect delay {e.connect_delay_ms:g} ms, ttfb {e.ttfb_ms:g} ms, realtime factor "
                              f"{e.realtime_factor:g}, {e.chunk_ms:g} ms chunks, {e.ms_per_char:g} ms/char, pcm_24000"
                              + (f", refusals {' '.join(e.limit_flags())}" if e.limit_flags() else ""),
                  "rows": self.rows, "capacity": report.capacity(self.rows), "idle_memory": idle,
                  "notes": self.notes, "duration_s": round((datetime.now(UTC) - self.started).total_seconds())}
        report.write(result, self.out)
        try:
            result["plots"] = plots.write_all(self.rows, self.out)
        except Exception as ex:  # noqa: BLE001 - numbers matter more than pictures
            self.notes.append(f"plots failed: {type(ex).__name__}: {ex}")
        report.write(result, self.out)
        latest = RESULTS / "latest"
        if self.out.resolve() != latest.resolve():
            shutil.rmtree(latest, ignore_errors=True)
            shutil.copytree(self.out, latest)
        return result

    def stop(self) -> None:
        """Stop every process we started, in reverse order."""
        self.sampler.stop()
        for s in reversed(self.stopables):
            with contextlib.suppress(Exception):  # keep stopping the others
                s.stop()


def _cpu(resources: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{k} {v['cpu_mean']}%" for k, v in resources.items())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the markdown report."""
    args = parse_args(argv)
    # SIGTERM (and SIGINT, which a background shell ignores) end the run through the finally below,
    # so every child process, redis-server included, is stopped.
    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    b = Bench(args)
    try:
        b.setup()
        b.say(f"targets {[t.name for t in b.targets]}, levels {b.levels}")
        idle = b.idle_memory()  # first, on a fresh gateway: after the sweep its heap has room to spare
        b.sweep()
    finally:
        b.stop()
    result = b.finish(idle)
    print(report.markdown(result))
    b.say(f"wrote {b.out} and {RESULTS / 'latest'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
