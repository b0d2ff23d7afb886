"""What usage metering costs: gateway CPU per ended context, and Redis commands per flush.

Against a private redis-server: ``--contexts`` synthetic ended contexts spread over ``--keys`` keys go
through ``meter_context`` (the one call the session makes when a context ends), then the writer's
flush; reports µs of CPU per context and the Redis commands the flush sent (``INFO commandstats``).

    .venv/bin/python -m bench.metering_cost [--contexts 20000] [--keys 50]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis.asyncio as aioredis
from gateway.contexts import ContextRequest, ContextState
from gateway.metering import UsageWriter, meter_context

from shared.audio.formats import parse_format
from shared.redis_server import RedisServer


async def run(contexts: int, n_keys: int) -> None:
    """Meter ``contexts`` contexts over ``n_keys`` keys and flush once."""
    server = RedisServer().start()
    r = aioredis.Redis.from_url(server.url)
    try:
        writer = UsageWriter(r)
        req = ContextRequest("c", "v", "elevenlabs", "eleven_flash_v2_5", parse_format("pcm_16000"), text="x" * 50)
        ended = []
        for i in range(contexts):
            ctx = ContextState(req, "s", tenant=f"key_{i % n_keys}")
            ctx.started_at, ctx.audio_seconds_played, ctx.billed_chars = 1.0, 2.5, 50
            ended.append(ctx)
        await r.config_resetstat()
        t0 = time.process_time()
        for ctx in ended:
            meter_context(writer, ctx, "completed")
        t1 = time.process_time()
        await writer.flush()
        t2 = time.process_time()
        stats = await r.info("commandstats")
        sent = sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_config", "cmdstat_info"))
        print(f"meter_context: {(t1 - t0) / contexts * 1e6:.1f} us CPU per context; one flush of {contexts} "
              f"contexts over {n_keys} keys: {(t2 - t1) * 1000:.1f} ms CPU, {sent} Redis commands")
    finally:
        await r.aclose()
        server.stop()


def main() -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", type=int, default=20000)
    p.add_argument("--keys", type=int, default=50)
    args = p.parse_args()
    asyncio.run(run(args.contexts, args.keys))


if __name__ == "__main__":
    main()
