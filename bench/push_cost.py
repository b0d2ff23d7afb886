"""``python -m bench.push_cost``: gateway CPU and Redis commands per streamed input push, old way vs new.

An LLM-streamed context sends one text message per token, and each becomes one
:meth:`Dispatcher.push_input`. This pushes ``--pushes`` typical token ``TextInput`` messages through
each way of pushing, in-process against its own throw-away redis-server, one awaited push at a time
(as a session does), and reports per push: this process's CPU (``time.process_time``), the
redis-server's CPU (``INFO cpu``), and the commands Redis ran (``INFO commandstats``: calls made
inside a script count as well as the EVALSHA that ran them, though the client sent only the EVALSHA).

Noise: the ways run in interleaved rounds (``--rounds``), each round pushing to a fresh set of
``--jobs`` jobs, so a burst of load from another process hits every way alike; the median round is
reported, the fastest (load from elsewhere only ever adds CPU time), and the median over rounds of
each way's ratio to ``before`` in the same round: the figure that held still across loaded and
quiet runs here. CPU time, unlike wall time, does not count the waits for Redis.

* ``before`` — the pipeline as it was up to c8125bf: RPUSH + EXPIRE + PUBLISH on every push;
* ``script`` — candidate (b) of issue #15, one EVALSHA: RPUSH, EXPIRE when the list is new or half
  its TTL is spent, PUBLISH;
* ``shipped`` — :class:`gateway.dispatch.Dispatcher` as it is in this tree.

    .venv/bin/python -m bench.push_cost [--pushes 20000] [--rounds 10] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from gateway.dispatch import INPUT_TTL_S, Dispatcher

from shared import keys, protocol
from shared.redis_server import RedisServer

TOKEN = " streaming"  # one LLM token, as LiveKit/Pipecat send it


class BeforeDispatcher(Dispatcher):
    """``push_input(s)`` exactly as they were up to c8125bf, for the side-by-side figure."""

    async def push_input(self, job_id: str, msg: protocol.Message) -> None:
        await self.push_inputs([(job_id, msg)])

    async def push_inputs(self, items: Iterable[tuple[str, protocol.Message]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for job_id, msg in items:
            data = protocol.encode(msg)
            pipe.rpush(keys.input_list(job_id), data)
            pipe.expire(keys.input_list(job_id), INPUT_TTL_S)
            pipe.publish(keys.input_channel(job_id), data)
        await pipe.execute()


# Candidate (b): RPUSH + EXPIRE-if-new-or-half-spent + PUBLISH as one EVALSHA. TTL answers -1 for a
# list without one, so such a list is repaired too. Kept to be measured beside the others.
PUSH_SCRIPT = """
local ttl = tonumber(ARGV[3])
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
if n == 1 or redis.call('TTL', KEYS[1]) < ttl / 2 then redis.call('EXPIRE', KEYS[1], ttl) end
redis.call('PUBLISH', ARGV[2], ARGV[1])
return n
"""


class ScriptDispatcher(Dispatcher):
    """Candidate (b): one EVALSHA per push, called on the client (a pipeline adds a SCRIPT EXISTS)."""

    def __init__(self, redis: aioredis.Redis, queue_name: str) -> None:
        super().__init__(redis, queue_name)
        self._script = redis.register_script(PUSH_SCRIPT)

    async def push_input(self, job_id: str, msg: protocol.Message) -> None:
        await self._script(keys=[keys.input_list(job_id)],
                           args=[protocol.encode(msg), keys.input_channel(job_id), INPUT_TTL_S])


WAYS: dict[str, type[Dispatcher]] = {"before": BeforeDispatcher, "script": ScriptDispatcher, "shipped": Dispatcher}


async def _commands(r: aioredis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = await r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if isinstance(v, dict)}


async def _server_cpu(r: aioredis.Redis) -> float:
    cpu: dict[str, Any] = await r.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def _round(r: aioredis.Redis, dispatcher: Dispatcher, pushes: int, jobs: int) -> dict[str, Any]:
    """``pushes`` awaited pushes spread round-robin over ``jobs`` fresh jobs; the figures per push."""
    job_ids = [uuid.uuid4().hex for _ in range(jobs)]
    seqs = dict.fromkeys(job_ids, 0)
    before_cmds, before_srv = await _commands(r), await _server_cpu(r)
    sent = 0
    t0 = time.process_time()
    for i in range(pushes):
        job_id = job_ids[i % jobs]
        seqs[job_id] += 1
        await dispatcher.push_input(job_id, protocol.TextInput(seqs[job_id], TOKEN))
        sent += 1
    cpu = time.process_time() - t0
    srv = await _server_cpu(r) - before_srv
    after_cmds = await _commands(r)
    calls = {c: n - before_cmds.get(c, 0) for c, n in after_cmds.items() if n > before_cmds.get(c, 0)}
    calls.pop("info", None)  # our own readings
    ttls = [await r.ttl(keys.input_list(j)) for j in job_ids]
    await r.delete(*(keys.input_list(j) for j in job_ids))
    return {"cpu_us": cpu * 1e6 / sent, "server_cpu_us": srv * 1e6 / sent,
            "commands": sum(calls.values()) / sent, "by_command": {c: n / sent for c, n in calls.items()},
            "min_ttl_s": min(ttls)}


async def run(pushes: int, rounds: int, jobs: int, ways: list[str]) -> dict[str, Any]:
    """Every way, interleaved round by round; the median round of each, and the median of its ratios to the first way."""
    server = RedisServer().start()
    try:
        r = aioredis.Redis.from_url(server.url)
        dispatchers = {w: WAYS[w](r, "bench:queue") for w in ways}
        for d in dispatchers.values():  # warm-up: connections, script load, code paths
            await _round(r, d, 500, jobs)
        per_round = max(1, pushes // rounds)
        rows: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
        for i in range(rounds):
            for w in ways[i % len(ways):] + ways[:i % len(ways)]:  # each way takes its turn going first
                rows[w].append(await _round(r, dispatchers[w], per_round, jobs))
        await r.aclose()
    finally:
        server.stop()
    out: dict[str, Any] = {"pushes": per_round * rounds, "rounds": rounds, "jobs": jobs, "token": TOKEN,
                           "input_ttl_s": INPUT_TTL_S, "ways": {}}
    base = rows[ways[0]]
    for w, rs in rows.items():
        out["ways"][w] = {
            # Each round against the first way's round next to it: load from elsewhere hits both alike.
            f"cpu_ratio_to_{ways[0]}": round(statistics.median(x["cpu_us"] / b["cpu_us"] for x, b in zip(rs, base)), 3),
            f"server_cpu_ratio_to_{ways[0]}": round(statistics.median(
                x["server_cpu_us"] / b["server_cpu_us"] for x, b in zip(rs, base)), 3),
            "cpu_us_per_push": round(statistics.median(x["cpu_us"] for x in rs), 1),
            "cpu_us_per_push_fastest_round": round(min(x["cpu_us"] for x in rs), 1),
            "cpu_us_per_push_rounds": [round(x["cpu_us"], 1) for x in rs],
            "server_cpu_us_per_push": round(statistics.median(x["server_cpu_us"] for x in rs), 1),
            "server_cpu_us_per_push_fastest_round": round(min(x["server_cpu_us"] for x in rs), 1),
            "commands_per_push": round(statistics.median(x["commands"] for x in rs), 3),
            "by_command": {c: round(statistics.median(x["by_command"].get(c, 0.0) for x in rs), 3)
                           for c in sorted({c for x in rs for c in x["by_command"]})},
            "min_ttl_s_after": min(x["min_ttl_s"] for x in rs)}
    return out


def main(argv: list[str] | None = None) -> int:
    """Run, print a table, optionally write JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.push_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pushes", type=int, default=20_000, help="per way, over all rounds")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--jobs", type=int, default=20, help="concurrent streamed jobs each round pushes to")
    p.add_argument("--ways", default=",".join(WAYS))
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    out = asyncio.run(run(args.pushes, args.rounds, args.jobs, [w for w in args.ways.split(",") if w]))
    print(f"{out['pushes']} pushes per way in {out['rounds']} interleaved rounds over {out['jobs']} jobs")
    for w, row in out["ways"].items():
        cmds = ", ".join(f"{c} {n:g}" for c, n in row["by_command"].items())
        ratios = [v for k, v in row.items() if "ratio" in k]
        print(f"{w:<8} gateway CPU/push {row['cpu_us_per_push']:>5} us (fastest {row['cpu_us_per_push_fastest_round']:>5},"
              f" x{ratios[0]:.3f})  redis CPU/push {row['server_cpu_us_per_push']:>4} us"
              f" (fastest {row['server_cpu_us_per_push_fastest_round']:>4}, x{ratios[1]:.3f})"
              f"  {row['commands_per_push']:g} commands/push ({cmds})  min TTL after {row['min_ttl_s_after']} s")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
