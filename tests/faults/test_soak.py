"""Bounded soak: hundreds of concurrent sessions for a fixed time, every word checked, resources flat after.

Quick mode: 200 sessions for ~20 s. Long mode (``TTS_TEST_LONG=1``): 300 sessions for 3 minutes.
Each session speaks one utterance after another (with a short pause, as a voice agent would); every
utterance's frames must be numbered 0..n-1 with no gap, duplicate or reordering, match its final's
count, and decode (emulator.synth.decode_text) to exactly its text. Afterwards the gateway's and
workers' RSS and open file descriptors and Redis' keys are compared with their warmed-up values.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import aiohttp
import psutil
import pytest
import redis.asyncio as aioredis
from emulator.synth import decode_text

from tests.faults.support import assert_no_orphans, metric, pick, report, start_stack, until
from tests.support.procs import Proc, Procs
from tests.support.stack import NativeClient

SESSIONS = pick(200, 300)
DURATION_S = pick(20.0, 180.0)
WARMUP_S = pick(4.0, 20.0)


@dataclass
class Tally:
    """What every session saw, summed."""

    utterances: int = 0
    chunks: int = 0
    audio_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    ttfa_ms: list[float] = field(default_factory=list)


@dataclass
class Usage:
    """One process's resources at one moment."""

    rss_mb: float
    fds: int
    redis_conns: int  # pooled: grow to the peak concurrency seen, capped by the pool size
    upstream_conns: int  # pooled ElevenLabs sockets, capped by POOL_MAX_SOCKETS
    other_fds: int  # everything else (files, pipes, client sockets, event fds): must not grow


def usage(proc: Proc, redis_port: int, upstream_port: int) -> Usage:
    """RSS and descriptors; sockets of the Redis and upstream connection pools are counted apart."""
    p = psutil.Process(proc.pid)
    peers = [c.raddr.port for c in p.net_connections() if c.raddr]
    redis_conns, upstream = peers.count(redis_port), peers.count(upstream_port)
    fds = p.num_fds()
    return Usage(round(p.memory_info().rss / 2**20, 1), fds, redis_conns, upstream, fds - redis_conns - upstream)


async def redis_keys(url: str) -> tuple[int, list[str]]:
    """DBSIZE and the sorted ``tts:*`` key names (heartbeats included)."""
    r = aioredis.Redis.from_url(url)
    try:
        # Usage metering's per-day hashes appear with the day's first context and expire on their own TTL.
        every = [k async for k in r.scan_iter(match="tts:*", count=1000)]
        usage = [k for k in every if k.startswith((b"tts:usage:", b"tts:usage-keys:", b"tts:usage-total:"))]
        names = sorted(k.decode() for k in every if k not in usage)
        return int(await r.dbsize()) - len(usage), names
    finally:
        await r.aclose()


async def one_session(i: int, base: str, http: aiohttp.ClientSession, deadline: float, tally: Tally) -> None:
    rng = random.Random(i)
    await asyncio.sleep(i * 0.01)  # stagger the connects
    async with NativeClient.connect(base, http) as c:
        k = 0
        while time.monotonic() < deadline:
            cid = f"u{k}"
            text = f"Session {i} line {k}: every word arrives once."
            res = await c.speak(cid, text, format="pcm_16000", timeout=60)
            n = len(res.frames)
            if res.final is None:
                tally.problems.append(f"s{i} {cid}: no final ({res.error})")
            elif res.seqs != list(range(n)) or res.final["chunks"] != n:
                tally.problems.append(f"s{i} {cid}: seqs {res.seqs[:10]}... final says {res.final['chunks']}")
            elif (got := decode_text(res.audio, 16000)) != text:
                tally.problems.append(f"s{i} {cid}: heard {got!r}")
            else:
                tally.utterances += 1
                tally.chunks += n
                tally.audio_bytes += len(res.audio)
                if res.final.get("ttfa_ms") is not None:
                    tally.ttfa_ms.append(res.final["ttfa_ms"])
            del c.results[cid]  # keep the test's own memory flat
            k += 1
            await asyncio.sleep(rng.uniform(0.2, 1.0))
        if c.session_errors:
            tally.problems.append(f"s{i}: session errors {c.session_errors}")


@pytest.mark.timeout(DURATION_S + 240)
async def test_soak_loses_no_word_and_leaves_resources_flat(procs: Procs, redis_url: str) -> None:
    stack = await start_stack(procs, redis_url, workers=2,
                              emulator={"ttfb_ms": 30, "realtime_factor": 10, "chunk_ms": 250},
                              POOL_MAX_SOCKETS=32, LOG_LEVEL="warning")
    services = [stack.gateway, *stack.workers]
    ports = (int(redis_url.rsplit(":", 1)[1].split("/")[0]), stack.emulator.port or 0)
    keys_before = await redis_keys(redis_url)
    before = {p.name: usage(p, *ports) for p in services}
    tally = Tally()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        t0 = time.monotonic()
        deadline = t0 + DURATION_S
        run = asyncio.gather(*(one_session(i, stack.base, http, deadline, tally) for i in range(SESSIONS)))
        runner = asyncio.ensure_future(run)
        await asyncio.sleep(WARMUP_S)
        warm = {p.name: usage(p, *ports) for p in services}
        warm_utterances = tally.utterances
        await asyncio.sleep(max(0.0, deadline - 1.0 - time.monotonic()))
        late = {p.name: usage(p, *ports) for p in services}
        await runner
        elapsed = time.monotonic() - t0
    # Every session closed: nothing live anywhere, nothing left in the queue.
    await until(lambda: _zero(stack.gateway, "tts_active_sessions"), 10, "gateway sessions back to zero")
    await until(lambda: _zero(stack.gateway, "tts_active_contexts"), 10, "gateway contexts back to zero")
    await until(stack.emu_idle, 10, "emulator contexts back to zero")
    await assert_no_orphans(redis_url)
    await asyncio.sleep(1.0)
    after = {p.name: usage(p, *ports) for p in services}
    keys_after = await redis_keys(redis_url)

    assert not tally.problems, tally.problems[:10]
    assert tally.utterances >= SESSIONS * 3, tally.utterances  # every session kept talking (2 cores, shared)
    for name, u in after.items():
        w = warm[name]
        assert u.rss_mb - w.rss_mb < pick(20, 25), f"{name} RSS {w.rss_mb} MB warm -> {u.rss_mb} MB after"
        assert u.other_fds - before[name].other_fds <= 3, f"{name}: {before[name]} before -> {u} after"
        # Pools keep what the peak needed, within their caps: the gateway's client (256); a worker's client (64)
        # plus arq's own pool, which has no cap but one connection per running job at most (WORKER_MAX_JOBS).
        assert u.redis_conns <= (256 if name.startswith("gateway") else 64 + 200 + 4), u
        assert u.upstream_conns <= 32, u
    assert keys_after[1] == keys_before[1], (keys_before, keys_after)
    assert keys_after[0] == keys_before[0], (keys_before, keys_after)
    ttfa = sorted(tally.ttfa_ms)
    report("soak", sessions=SESSIONS, seconds=round(elapsed, 1), utterances=tally.utterances,
           utterances_after_warmup=tally.utterances - warm_utterances, chunks=tally.chunks,
           audio_s=round(tally.audio_bytes / 32000, 1), lost_or_reordered=0,
           ttfa_ms_p50=ttfa[len(ttfa) // 2], ttfa_ms_p99=ttfa[int(len(ttfa) * 0.99)],
           resources={n: {"before": vars(before[n]), "warm": vars(warm[n]), "late_in_load": vars(late[n]),
                          "after": vars(after[n])} for n in warm},
           redis={"dbsize_before": keys_before[0], "dbsize_after": keys_after[0],
                  "tts_keys_before": len(keys_before[1]), "tts_keys_after": len(keys_after[1])})


async def _zero(proc: Proc, name: str) -> bool:
    return await metric(proc, name) == 0
