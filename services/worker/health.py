"""The worker's own HTTP port: /metrics for Prometheus, /healthz and /readyz for probes."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from worker.runner import WakeableWorker
from worker.state import STATE_KEY, WorkerState


def create_health_app(worker: WakeableWorker) -> web.Application:
    """Probe and metrics endpoints reading the worker's live state."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        state: WorkerState | None = worker.ctx.get(STATE_KEY)
        if state is None or not state.ready:
            return web.json_response({"status": "starting"}, status=503)
        if state.draining:
            return web.json_response({"status": "draining"}, status=503)
        try:
            await state.redis.ping()
        except (RedisError, OSError):
            return web.json_response({"status": "redis_unreachable"}, status=503)
        providers = {n: p.status() for n, p in state.providers.items()}
        # Still ready (the queue, not a Service, routes jobs here), but an autoscaler can see a full worker.
        return web.json_response({"status": "ready", "worker_id": state.worker_id,
                                  "active_jobs": len(state.active_jobs),
                                  "saturated": any(p.get("saturated") for p in providers.values()),
                                  "providers": providers})

    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest())
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_health_server(worker: WakeableWorker, host: str, port: int) -> web.AppRunner:
    """Serve the health app; the caller cleans the runner up."""
    runner = web.AppRunner(create_health_app(worker), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
