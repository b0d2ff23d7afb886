"""Probes and metrics: /healthz (alive), /readyz (Redis reachable and a live worker), /metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from gateway.appkeys import SERVICES


async def healthz(_: web.Request) -> web.Response:
    """The process is alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to serve: not draining, Redis answers, at least one worker heartbeats."""
    services = request.app[SERVICES]
    if services.draining:
        return web.json_response({"status": "draining"}, status=503)
    try:
        await services.redis.ping()
        snap = await services.catalog.snapshot(max_age=0.5)
    except (RedisError, OSError):
        return web.json_response({"status": "redis_unreachable"}, status=503)
    live = [w for w in snap.workers if not w.draining]
    if not live:
        return web.json_response({"status": "no_workers"}, status=503)
    return web.json_response({"status": "ready", "workers": len(live), "voices": len(snap.voices),
                              "sessions": len(services.registry.sessions)})


async def metrics(_: web.Request) -> web.Response:
    """Prometheus exposition."""
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


def add_routes(app: web.Application) -> None:
    """Register the probe and metrics routes (no auth: probes and scrapers hold no keys)."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
