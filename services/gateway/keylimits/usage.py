"""Reading a key's usage: characters per UTC day, contexts by outcome, rejections, live contexts."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from gateway.keylimits.limiter import utc_day
from shared import keys

MAX_DAYS = 31


async def read_usage(redis: aioredis.Redis, key_id: str, quota_chars: int | None, days: int = 7) -> dict[str, Any]:
    """Usage of the last ``days`` UTC days (today first) and what is left of today's quota."""
    days = max(1, min(days, MAX_DAYS))
    now = time.time()
    names = [utc_day(now - 86400 * i) for i in range(days)]
    pipe = redis.pipeline(transaction=False)
    for day in names:
        pipe.hgetall(keys.key_usage(key_id, day))
    pipe.zcount(keys.key_active_contexts(key_id), now, "+inf")
    *raw_days, live = await pipe.execute()
    out_days: list[dict[str, Any]] = []
    for day, raw in zip(names, raw_days):
        counters = {k.decode(): int(v) for k, v in raw.items()}
        out_days.append({"day": day, "characters": counters.pop("used", 0),
                         "reserved": counters.pop("reserved", 0), **counters})
    spent = int(out_days[0]["characters"]) + int(out_days[0]["reserved"])
    remaining = None if quota_chars is None else max(0, quota_chars - spent)
    return {"key_id": key_id, "quota_chars_per_day": quota_chars, "remaining_today": remaining,
            "live_contexts": int(live), "days": out_days}
