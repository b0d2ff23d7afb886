"""The targets one run compares, and how a load level is driven against each.

* ``floor``      — a client on a warm ``multi-stream-input`` socket straight to the emulator.
* ``proxy``      — the seed's design: fresh upstream socket per request (bench/proxy.py).
* ``stack-1w``   — client → gateway → Redis → 1 worker (pooled upstream) → emulator, native protocol.
* ``stack-2w``   — the same with two worker processes.
* ``stack-2g``   — two gateways and one worker on one Redis; sessions alternate between the gateways.
* ``compat-1w``  — the 1-worker stack through the gateway's ElevenLabs-compatible WebSocket.
* ``cache-1w``   — the 1-worker stack, every utterance a repeat of a cached phrase.

Every target talks to the same emulator process with the same settings, and for one concurrency
every target speaks the same texts (same seeds).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import ROOT, VOICE, Sampler

CACHE_TEXT = "Thanks for calling, how can I help you today?"


@dataclass(frozen=True)
class Target:
    """Something the load generator can point sessions at."""

    name: str
    dialect: str  # native | elevenlabs
    url: str
    cache: bool = False
    processes: tuple[str, ...] = ()  # sampler names of the processes serving it
    warmup: bool = True
    more_urls: tuple[str, ...] = ()  # further entry points (other gateways): sessions go round-robin over all

    @property
    def urls(self) -> list[str]:
        """Every entry point, in the order sessions are dealt to them."""
        return [self.url, *self.more_urls]


def floor_url(emulator_url: str) -> str:
    """The emulator's multi-stream-input URL for pcm_24000 (the floor's warm socket)."""
    ws = emulator_url.replace("http", "ws", 1)
    return f"{ws}/v1/text-to-speech/{VOICE}/multi-stream-input?output_format=pcm_24000&model_id=eleven_flash_v2_5"


def native_url(base_url: str) -> str:
    """The gateway's native WebSocket."""
    return base_url.replace("http", "ws", 1) + "/v1/ws"


def compat_url(base_url: str) -> str:
    """The gateway's ElevenLabs-compatible multi-stream-input WebSocket."""
    ws = base_url.replace("http", "ws", 1)
    return f"{ws}/v1/text-to-speech/{VOICE}/multi-stream-input?output_format=pcm_24000&model_id=eleven_flash_v2_5"


def utterances_for(level: int, min_contexts: int, cap: int) -> int:
    """Utterances per session so a level yields at least ``min_contexts`` contexts (2..cap)."""
    return max(2, min(cap, math.ceil(min_contexts / max(level, 1))))


def loadgen_processes(level: int) -> int:
    """Client processes for a level: one core's worth of client work is plenty below ~500 streams."""
    return 1 if level <= 500 else 2


def duration_for(level: int, min_contexts: int, floor_s: float, cap_s: float) -> float:
    """Seconds of steady load for a level: enough for ``min_contexts`` contexts (~6 s each)."""
    return max(floor_s, min(cap_s, min_contexts * 6.0 / max(level, 1)))


def drive(target: Target, level: int, *, utterances: int, stream_share: float, seed: int,
          sampler: Sampler, jitter_ms: float, stagger_s: float, timeout_s: float = 600.0,
          duration_s: float | None = None, verify_share: float = 0.0, on_spawn: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Run ``level`` concurrent sessions against ``target``; merge what the client processes saw."""
    nproc = loadgen_processes(level)
    tmp = Path(tempfile.mkdtemp(prefix="bench-lg-"))
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    share = [level // nproc + (1 if i < level % nproc else 0) for i in range(nproc)]
    offset = 0
    for i, n in enumerate(share):
        cfg = {"dialect": target.dialect, "urls": target.urls, "sessions": n, "offset": offset,
               "utterances": utterances, "stream_share": 0.0 if target.cache else stream_share,
               "seed": seed, "jitter_ms": jitter_ms, "stagger_s": stagger_s, "warmup": target.warmup,
               "cache": target.cache, "cache_text": CACHE_TEXT if target.cache else None,
               "context_timeout_s": 90.0, "duration_s": duration_s,
               "verify_share": verify_share}
        offset += n
        (tmp / f"cfg{i}.json").write_text(json.dumps(cfg))
        out = tmp / f"out{i}.json"
        with open(tmp / f"err{i}.log", "wb") as err:  # the child keeps its own copy of the descriptor
            p = subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(tmp / f"cfg{i}.json"), str(out)],
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        sampler.watch(f"loadgen{i}", p.pid)
        if on_spawn is not None:
            on_spawn(f"loadgen{i}", p.pid)
        procs.append((p, out))
    t0 = time.monotonic()
    merged: dict[str, Any] = {"records": [], "connect_failed": 0, "warmup_failed": 0, "errors": []}
    for i, (p, out) in enumerate(procs):
        try:
            p.wait(max(1.0, timeout_s - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            merged["errors"].append(f"loadgen{i} timed out")
        sampler.unwatch(f"loadgen{i}")
        if p.returncode != 0 or not out.exists():
            merged["errors"].append(f"loadgen{i} rc={p.returncode}: "
                                    + (tmp / f"err{i}.log").read_text(errors="replace")[-500:])
            continue
        res = json.loads(out.read_text())
        merged["records"].extend(res["records"])
        merged["connect_failed"] += res["connect_failed"]
        merged["warmup_failed"] += res["warmup_failed"]
        merged.setdefault("connect_errors", []).extend(res.get("connect_errors", []))
        merged.setdefault("warmup_errors", []).extend(res.get("warmup_errors", []))
        for k in ("connect_s", "warmup_s", "measured_s", "post_s"):
            merged[k] = max(merged.get(k, 0.0), res[k])
    return merged


def idle_memory(target_url: str, n: int, gateway_pid: int, settle_s: float = 3.0) -> dict[str, Any]:
    """Gateway RSS growth per idle native session: open ``n`` sessions, measure, close."""
    import psutil

    gw = psutil.Process(gateway_pid)

    def open_idle(count: int) -> tuple[subprocess.Popen[str], Path]:
        tmp = Path(tempfile.mkdtemp(prefix="bench-idle-"))
        (tmp / "cfg.json").write_text(json.dumps({"dialect": "native", "url": target_url, "sessions": count,
                                                  "idle": True}))
        p = subprocess.Popen([sys.executable, "-m", "bench.loadgen", str(tmp / "cfg.json"), str(tmp / "o.json")],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        line = p.stdout.readline()
        if "READY" not in line:
            raise RuntimeError(f"idle loadgen did not get ready: {line!r}")
        return p, tmp / "o.json"

    def close(p: subprocess.Popen[str], out: Path) -> dict[str, Any]:
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(60)
        return json.loads(out.read_text()) if out.exists() else {}

    # A small first batch warms lazily created code paths, so the measured delta is what a session
    # holds rather than one-off growth (small: memory it frees is reused by the measured batch).
    p, out = open_idle(max(1, min(50, n // 20)))
    time.sleep(settle_s)
    close(p, out)
    time.sleep(settle_s)
    before = gw.memory_info().rss
    p, out = open_idle(n)
    time.sleep(settle_s)
    during = gw.memory_info().rss
    res = close(p, out)
    time.sleep(settle_s)
    after = gw.memory_info().rss
    connected = res.get("connected", n)
    return {"sessions": connected, "rss_before_mb": round(before / 2**20, 1), "rss_open_mb": round(during / 2**20, 1),
            "rss_after_close_mb": round(after / 2**20, 1),
            "kb_per_session": round((during - before) / 1024 / max(connected, 1), 1)}
