"""Reading the usage gateway/metering.py writes: one key's days, one day's summary across keys.

Shared by the JSON routes (gateway/usage_routes.py) and the Prometheus export
(gateway/usage_export.py); callers bound the number of days and keys.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import redis.asyncio as aioredis

from gateway.metering import COUNTERS
from shared import keys


async def read_key_usage(redis: aioredis.Redis, key_id: str, first: dt.date, last: dt.date) -> dict[str, Any]:
    """One key's usage per UTC day from ``first`` to ``last`` (newest first) and their total."""
    days = [(last - dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    pipe = redis.pipeline(transaction=False)
    for day in days:
        pipe.hgetall(keys.key_usage(key_id, day))
    rows = [{"day": day, **day_row(raw)} for day, raw in zip(days, await pipe.execute())]
    return {"key_id": key_id, "from": first.isoformat(), "to": last.isoformat(), "total": total_of(rows),
            "days": rows}


async def read_day_summary(redis: aioredis.Redis, day: str, limit: int) -> dict[str, Any]:
    """One UTC day across keys: the total, and the ``limit`` most active keys (by characters) with theirs."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.usage_day_total(day))
    pipe.zcard(keys.usage_day_keys(day))
    pipe.zrevrange(keys.usage_day_keys(day), 0, limit - 1)
    total, count, top = await pipe.execute()
    ids = [k.decode() for k in top]
    pipe = redis.pipeline(transaction=False)
    for key_id in ids:
        pipe.hgetall(keys.key_usage(key_id, day))
    per_key = await pipe.execute() if ids else []
    return {"day": day, "total": day_row(total), "keys_with_usage": int(count),
            "keys": [{"key_id": k, **day_row(raw)} for k, raw in zip(ids, per_key)]}


def day_row(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """A usage hash as JSON: every counter, metering's zeros included; quota ``used`` as ``characters``."""
    counters = {k.decode(): int(v) for k, v in raw.items()}
    row: dict[str, Any] = {"characters": counters.pop("used", 0), "reserved": counters.pop("reserved", 0)}
    for name in COUNTERS:
        row[name] = counters.pop(name, 0)
    row["audio_seconds"] = round(row.pop("audio_ms") / 1000, 3)
    row.update(counters)  # contexts, outcomes, rejections (the quota's own fields)
    return row


def total_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of day rows, field by field."""
    total: dict[str, Any] = {}
    for row in rows:
        for name, value in row.items():
            if name != "day":
                total[name] = total.get(name, 0) + value
    if "audio_seconds" in total:
        total["audio_seconds"] = round(total["audio_seconds"], 3)
    return total
