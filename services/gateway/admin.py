"""The operator's API and the queue-depth gauge.

* ``POST /admin/reset-queues[?queue=]``: purge waiting jobs, abort running ones, tell their sessions
  (see gateway/queueops.py); answers the counts.
* ``GET /admin/status[?queue=]``: queue depth, live workers with their load and provider/pool state,
  live gateways with their sessions and contexts, and this gateway's own view.

Both need ``ADMIN_TOKEN`` (``Authorization: Bearer``; gateway/auth ``require_admin``, a constant-time
check, never a client key) and answer typed JSON errors: 401 without a valid token, 403 when the
admin API is disabled because ``ADMIN_TOKEN`` is unset. ``add_routes`` also starts the task that
keeps ``tts_queue_depth`` fresh (one small script per second per gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
from aiohttp import web
from redis.exceptions import RedisError

from gateway.appkeys import QUEUE_OPS, SERVICES
from gateway.auth.guard import require_admin
from gateway.http_errors import error_response
from gateway.queueops import QueueOps
from gateway.services import GatewayServices
from shared import keys, metrics
from shared.errors import InvalidRequest, NotFound, ServiceUnavailable, TTSError
from shared.logging import get_logger
from shared.protocol import WorkerHeartbeat

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DEPTH_INTERVAL_S = 1.0


def add_routes(app: web.Application) -> None:
    """Register the admin routes and the queue-depth refresher (call after the core cleanup_ctx)."""
    app.router.add_post("/admin/reset-queues", reset_queues)
    app.router.add_get("/admin/status", status)
    app.cleanup_ctx.append(_queue_ops_ctx)


def _admin(handler: Handler) -> Handler:
    """ADMIN_TOKEN first, then typed JSON errors for whatever the handler raises."""
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            await require_admin(request)
            return await handler(request)
        except TTSError as e:
            return error_response(e)
        except (RedisError, OSError):
            return error_response(ServiceUnavailable("Redis is unreachable"))
    return wrapped


def _queue_name(request: web.Request) -> str:
    """The queue a request names: only queues this deployment runs, never an arbitrary Redis key.

    The reset script purges whatever sorted set it is given: ``?queue=tts:keys`` emptied the key index.
    """
    known = request.app[SERVICES].settings.queue_name
    name = request.query.get("queue") or known
    if len(name) > 200 or not name.isprintable():
        raise InvalidRequest("queue must be a printable name of at most 200 characters", field="queue")
    if name != known:
        raise NotFound(f"no queue {name!r} here", field="queue", known=[known])
    return name


@_admin
async def reset_queues(request: web.Request) -> web.Response:
    """``POST /admin/reset-queues``: ``{"purged", "aborted", "still_running", "sessions_notified", ...}``."""
    queue = _queue_name(request)
    report = await request.app[QUEUE_OPS].reset(queue)
    log.warning("queue_reset", **report.to_dict())
    return web.json_response(report.to_dict())


@_admin
async def status(request: web.Request) -> web.Response:
    """``GET /admin/status``: the deployment as its heartbeats describe it."""
    services = request.app[SERVICES]
    queue = _queue_name(request)
    depth = await request.app[QUEUE_OPS].depth(queue)
    snap = await services.catalog.snapshot(max_age=0)
    now = time.time()
    workers = [_worker_view(w.worker_id, w.heartbeat, now) for w in snap.workers]
    workers.sort(key=lambda w: w["worker_id"])
    gateways = await _gateways(services, now)
    serving = [w for w in workers if not w["draining"]]
    return web.json_response({
        "gateway": {"gateway_id": services.gateway_id, "draining": services.draining,
                    "sessions": len(services.registry.sessions),
                    "contexts": services.registry.live_contexts()},
        "queue": {"name": queue, "waiting": depth.waiting, "running": depth.running, "in_queue": depth.in_queue},
        "workers": workers,
        "gateways": gateways,
        "totals": {
            "workers": len(workers), "workers_serving": len(serving),
            "active_jobs": sum(w["active_jobs"] for w in workers),
            "job_slots": sum(w["max_jobs"] for w in serving),
            "sessions": sum(g["sessions"] for g in gateways),
            "contexts": sum(g["contexts"] for g in gateways),
            "voices": len(snap.voices),
        },
    })


def _worker_view(worker_id: str, beat: WorkerHeartbeat, now: float) -> dict[str, Any]:
    active, cap = beat.active_jobs, beat.max_jobs
    return {"worker_id": worker_id, "host": beat.host, "pid": beat.pid,
            "draining": beat.draining, "active_jobs": active, "max_jobs": cap,
            "load": round(active / cap, 3) if cap else None, "jobs_done": beat.jobs_done,
            "uptime_s": _age(beat.started_at, now), "heartbeat_age_s": _age(beat.at, now),
            "voices": len(beat.voices), "providers": beat.providers}


async def _gateways(services: GatewayServices, now: float) -> list[dict[str, Any]]:
    found = [k async for k in services.redis.scan_iter(match=keys.GATEWAY_HEARTBEAT_PATTERN, count=500)]
    values = await services.redis.mget(found) if found else []
    out = []
    for raw in values:
        if raw is None:
            continue  # expired between SCAN and MGET
        hb = msgpack.unpackb(raw, raw=False)
        out.append({"gateway_id": hb.get("gateway_id"), "sessions": int(hb.get("sessions", 0)),
                    "contexts": int(hb.get("contexts", 0)), "draining": bool(hb.get("draining")),
                    "heartbeat_age_s": _age(hb.get("at"), now)})
    out.sort(key=lambda g: str(g["gateway_id"]))
    return out


def _age(at: Any, now: float) -> float | None:
    return round(now - at, 3) if isinstance(at, (int, float)) else None


async def _queue_ops_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    ops = app[QUEUE_OPS] = QueueOps(services.redis, services.queue)
    task = asyncio.create_task(_refresh_depth_forever(ops, services.settings.queue_name), name="queue-depth")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _refresh_depth_forever(ops: QueueOps, queue: str) -> None:
    """Keep ``tts_queue_depth`` at most a second old; a Redis outage leaves the last value and a log line."""
    failing = False
    while True:
        try:
            metrics.QUEUE_DEPTH.set((await ops.depth(queue)).waiting)
            failing = False
        except (RedisError, OSError) as e:
            if not failing:
                log.warning("queue_depth_failed", error=type(e).__name__)
            failing = True
        await asyncio.sleep(DEPTH_INTERVAL_S)
