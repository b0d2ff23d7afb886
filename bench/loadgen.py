"""The load generator, run as its own process: ``python -m bench.loadgen CONFIG.json OUT.json``.

Sessions connect to ``url``, or round-robin to the ``urls`` of several entry points (gateways).

Phases: connect every session (bounded ramp), warm up (each session speaks one short unmeasured
utterance, so upstream pools have grown to the load), wait for all, then the measured phase: each
session starts after a random offset and speaks its plan back to back with short think times.
With ``"idle": true`` it only opens the sessions, prints ``READY``, and holds them until a line
arrives on stdin (for memory-per-idle-session).
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import sys
import time
from typing import Any

import aiohttp

from bench.clients import BaseSession, ContextRecord, ElevenLabsSession, NativeSession, make_plan

WARMUP_TEXT = "Warm up."
CONNECT_PARALLEL = 50


def session_class(dialect: str) -> type[BaseSession]:
    """Client class for a target's wire dialect."""
    return {"native": NativeSession, "elevenlabs": ElevenLabsSession}[dialect]


def session_urls(cfg: dict[str, Any]) -> list[str]:
    """The URL of each of this process's sessions: ``urls`` dealt round-robin by the session's number
    across all load-generator processes (``offset`` + index), so several processes together still
    split the sessions evenly; a single ``url`` serves them all."""
    urls = cfg.get("urls") or [cfg["url"]]
    offset = cfg.get("offset", 0)
    return [urls[(offset + i) % len(urls)] for i in range(cfg["sessions"])]


async def _connect_all(cfg: dict[str, Any], http: aiohttp.ClientSession) -> tuple[list[BaseSession], int]:
    cls = session_class(cfg["dialect"])
    sem = asyncio.Semaphore(CONNECT_PARALLEL)
    base_seed = cfg.get("seed", 1)
    offset = cfg.get("offset", 0)
    sessions = [cls(http, url, f"s{offset + i}", cfg.get("jitter_ms", 20.0) / 1000,
                    random.Random(base_seed * 100_003 + offset + i), cfg.get("verify_share", 0.0))
                for i, url in enumerate(session_urls(cfg))]
    failed = 0

    async def one(s: BaseSession) -> None:
        nonlocal failed
        async with sem:
            try:
                await s.connect()
            except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
                failed += 1
                s.closed_reason = f"connect_failed:{type(e).__name__}:{str(e)[:80]}"

    await asyncio.gather(*(one(s) for s in sessions))
    return sessions, failed


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """One measured run; returns records and phase timings."""
    timeout = cfg.get("context_timeout_s", 60.0)
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as http:
        t0 = time.perf_counter()
        sessions, connect_failed = await _connect_all(cfg, http)
        t_connected = time.perf_counter()
        live = [s for s in sessions if s.closed_reason is None]
        if cfg.get("idle"):
            print("READY", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            await asyncio.gather(*(s.close() for s in sessions))
            return {"connected": len(live), "connect_failed": connect_failed}
        warm = cfg.get("warmup", True)
        if warm:
            await asyncio.gather(*(s.run_context("cache" if cfg.get("cache") else "whole",
                                                 cfg.get("cache_text") or WARMUP_TEXT, 30.0, timeout)
                                   for s in live))
        t_warm = time.perf_counter()
        stagger = cfg.get("stagger_s", 1.0)

        duration = cfg.get("duration_s")  # None: each session speaks ``utterances`` and stops
        phase_start = time.perf_counter()

        async def measured(s: BaseSession) -> list[ContextRecord]:
            n = cfg.get("utterances", 2) if duration is None else 1000
            plan = make_plan(s.rng, n, cfg.get("stream_share", 0.3),
                             cfg.get("cache_text") if cfg.get("cache") else None)
            await asyncio.sleep(s.rng.uniform(0, stagger))
            out = []
            for mode, payload, think in plan:
                # With a duration, sessions keep speaking until it is up, so the level stays the
                # number of concurrent streams for the whole phase (the last turn still completes).
                if duration is not None and time.perf_counter() - phase_start >= duration:
                    break
                # Serialized after the phase: to_json decodes sampled contexts' audio (content check),
                # milliseconds of CPU that would stall every other session's clock if done here.
                out.append(await s.run_context(mode, payload, plan.token_rate, timeout))
                await asyncio.sleep(think)
            return out

        warm_records = [r.to_json() for s in live for r in s.records.values()]
        for s in live:
            s.records.clear()
        per_session = await asyncio.gather(*(measured(s) for s in live))
        t_done = time.perf_counter()
        await asyncio.gather(*(s.close() for s in sessions))
    records = [r.to_json() for rs in per_session for r in rs]
    connect_errors = sorted({s.closed_reason or "" for s in sessions if (s.closed_reason or "").startswith("connect")})
    return {"records": records, "connect_failed": connect_failed, "connect_errors": connect_errors[:5], "sessions": len(sessions),
            "warmup_failed": sum(1 for r in warm_records if not r["ok"]),
            "warmup_errors": sorted({str(r["error"]) for r in warm_records if not r["ok"]})[:5],
            "connect_s": t_connected - t0, "warmup_s": t_warm - t_connected, "measured_s": t_done - t_warm,
            "post_s": time.perf_counter() - t_done}


def main(argv: list[str] | None = None) -> int:
    """Read the config, run, write the result."""
    args = argv if argv is not None else sys.argv[1:]
    with open(args[0]) as f:
        cfg = json.load(f)
    # Fewer cyclic collections walking a thousand sessions' objects (see bench/emu.py).
    gc.freeze()
    gc.set_threshold(35_000, 20, 20)
    try:
        import uvloop

        result = uvloop.run(run(cfg))
    except ImportError:
        result = asyncio.run(run(cfg))
    with open(args[1], "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
