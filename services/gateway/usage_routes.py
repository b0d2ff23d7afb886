"""Reading usage: ``GET /v1/usage`` (a key, its own), ``GET /admin/usage`` (the operator), ``/metrics/tenants``.

Every read is a bounded pipeline over the per-day hashes gateway/metering.py writes
(gateway/usage_reads.py): at most ``MAX_RANGE_DAYS`` days per request and ``MAX_SUMMARY_KEYS`` keys
per day summary. ``install(app)``
also runs the background usage writer for this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from gateway.appkeys import SERVICES
from gateway.auth.guard import authenticate, require_admin
from gateway.auth.routes import _json_errors
from gateway.keylimits.limiter import utc_day
from gateway.usage_export import tenant_metrics
from gateway.usage_reads import read_day_summary, read_key_usage
from shared import keys
from shared.errors import Forbidden, InvalidRequest

MAX_RANGE_DAYS = 366
DEFAULT_DAYS = 7
DEFAULT_SUMMARY_KEYS = 100
MAX_SUMMARY_KEYS = 1000
# Key ids are ours (``key_`` + hex, or ``dev``); anything else is refused before it names a Redis key.
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WRITER_TASK = web.AppKey("usage_writer_task", asyncio.Task[None])


def install(app: web.Application) -> None:
    """Add the usage routes and the usage writer (call after the core services' cleanup_ctx)."""
    app.router.add_get("/v1/usage", own_usage)
    app.router.add_get("/admin/usage", admin_usage)
    app.router.add_get("/metrics/tenants", tenant_metrics)
    app.cleanup_ctx.append(_writer_ctx)


async def _writer_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    writer = services.metering  # built with the core services (app._services_ctx)
    app[_WRITER_TASK] = task = asyncio.create_task(writer.run_forever(), name="usage-writer")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await writer.close()


@_json_errors
async def own_usage(request: web.Request) -> web.Response:
    """``GET /v1/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`` (or ``?days=N``): the calling key's own usage."""
    principal = await authenticate(request)
    asked = request.query.get("key_id")
    if asked is not None and asked != principal.key_id:
        raise Forbidden("a key reads only its own usage", field="key_id")
    first, last = day_range(request.query)
    services = request.app[SERVICES]
    body = await read_key_usage(services.redis, principal.key_id, first, last)
    today = await _today(services.redis, principal.key_id)
    spent = today["used"] + today["reserved"]
    body.update(quota_chars_per_day=principal.quota_chars, live_contexts=today["live"],
                remaining_today=None if principal.quota_chars is None else max(0, principal.quota_chars - spent))
    return web.json_response(body)


@_json_errors
async def admin_usage(request: web.Request) -> web.Response:
    """``GET /admin/usage?key_id=K&from=&to=`` one key's days; without ``key_id``: ``?day=D&limit=N`` summary."""
    await require_admin(request)
    redis = request.app[SERVICES].redis
    key_id = request.query.get("key_id")
    if key_id is not None:
        if not _KEY_ID.match(key_id):
            raise InvalidRequest("key_id is not a key id", field="key_id")
        first, last = day_range(request.query)
        return web.json_response(await read_key_usage(redis, key_id, first, last))
    day = _day(request.query.get("day"), "day") if "day" in request.query else _today_date()
    limit = _int(request.query.get("limit"), DEFAULT_SUMMARY_KEYS, "limit", 1, MAX_SUMMARY_KEYS)
    return web.json_response(await read_day_summary(redis, day.isoformat(), limit))


def day_range(query: Any) -> tuple[dt.date, dt.date]:
    """``from``/``to`` (inclusive UTC days; ``to`` defaults to today), or the last ``days`` days; bounded."""
    if "from" not in query and "to" not in query:
        n = _int(query.get("days"), DEFAULT_DAYS, "days", 1, MAX_RANGE_DAYS)
        last = _today_date()
        return last - dt.timedelta(days=n - 1), last
    last = _day(query["to"], "to") if "to" in query else _today_date()
    first = _day(query["from"], "from") if "from" in query else last - dt.timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise InvalidRequest("from must not be after to", field="from")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise InvalidRequest(f"at most {MAX_RANGE_DAYS} days per request", field="from")
    return first, last


async def _today(redis: aioredis.Redis, key_id: str) -> dict[str, int]:
    pipe = redis.pipeline(transaction=False)
    pipe.hmget(keys.key_usage(key_id, utc_day(time.time())), ["used", "reserved"])
    pipe.zcount(keys.key_active_contexts(key_id), time.time(), "+inf")
    (used, reserved), live = await pipe.execute()
    return {"used": int(used or 0), "reserved": int(reserved or 0), "live": int(live)}


def _today_date() -> dt.date:
    return dt.date.fromisoformat(utc_day(time.time()))


def _day(raw: str | None, field: str) -> dt.date:
    try:
        if raw is None or not _DAY.match(raw):
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{field} must be a UTC day, YYYY-MM-DD", field=field) from None


def _int(raw: str | None, default: int, field: str, low: int, high: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{field} must be an integer", field=field) from None
    if not low <= value <= high:
        raise InvalidRequest(f"{field} must be from {low} to {high}", field=field)
    return value
