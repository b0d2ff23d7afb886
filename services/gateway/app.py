"""The gateway application factory: synchronous, no I/O; resources live in cleanup_ctx."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator

import msgpack
from aiohttp import web
from redis.exceptions import RedisError

from gateway import admin, catalog_routes, demo, edge, health, monitor, revocation, tenancy, usage_routes
from gateway.appkeys import BACKGROUND, SERVICES, SETTINGS
from gateway.catalog import Catalog
from gateway.compat.routes import add_routes as add_compat_routes
from gateway.dispatch import Dispatcher
from gateway.metering import UsageWriter
from gateway.native.handler import native_ws
from gateway.services import GatewayServices
from shared import keys, loop_health
from shared.errors import ShuttingDown
from shared.logging import get_logger
from shared.pubsub import PubSubHub
from shared.redis_client import create_redis
from shared.settings import Settings

log = get_logger(__name__)


def create_app(settings: Settings) -> web.Application:
    """Build the gateway; nothing connects until the app starts."""
    app = web.Application(client_max_size=max(settings.max_message_bytes, 1 << 20))
    app[SETTINGS] = settings
    edge.install(app)  # dev-mode Host check, CORS (before any route runs)
    app.cleanup_ctx.append(_services_ctx)
    tenancy.install(app)  # key, token and usage routes (their resources are built in _services_ctx)
    admin.add_routes(app)  # /admin/reset-queues, /admin/status, tts_queue_depth (after the core services)
    usage_routes.install(app)  # usage metering: writer, /v1/usage, /admin/usage, /metrics/tenants
    app.on_shutdown.append(_drain)
    health.add_routes(app)
    app.router.add_get("/v1/ws", native_ws)
    app.router.add_get("/v1/catalog", catalog_routes.get_catalog)
    add_compat_routes(app)  # ElevenLabs- and OpenAI-compatible endpoints (gateway/compat)
    demo.add_routes(app)
    return app


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    """Build every shared service in dependency order, then run the process-wide loops over them."""
    settings = app[SETTINGS]
    redis = create_redis(settings.redis_url, max_connections=256)
    gateway_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    hub = PubSubHub(redis, service="gateway")
    async with tenancy.open_tenancy(settings, redis, gateway_id) as tenants:
        services = GatewayServices(settings=settings, gateway_id=gateway_id, redis=redis, hub=hub,
                                   queue=Dispatcher(redis, settings.queue_name, settings.job_expires_s),
                                   catalog=Catalog(redis, settings.default_voice), tokens=tenants.tokens,
                                   key_limits=tenants.key_limits, cache=tenants.cache,
                                   metering=UsageWriter(redis))
        hub.on_disconnect = lambda: monitor.fail_inflight(services)
        hub.on_reconnect = lambda: monitor.after_reconnect(services)
        await hub.start()
        app[SERVICES] = services
        tasks = [asyncio.create_task(monitor.monitor_forever(services), name="context-monitor"),
                 asyncio.create_task(_heartbeat_forever(services), name="gateway-heartbeat"),
                 asyncio.create_task(loop_health.watch_loop_lag("gateway"), name="loop-lag")]
        gc_timer = loop_health.GcTimer("gateway")
        gc_timer.install()
        if not settings.auth_disabled:
            tasks.append(asyncio.create_task(revocation.watch_forever(services), name="revocation-watch"))
        app[BACKGROUND] = tasks
        if settings.auth_disabled:
            log.warning("auth_disabled", message="AUTH_DISABLED is on: anyone who can reach this port may "
                                                  "synthesize. Use only for local development.")
        log.info("gateway_started", gateway_id=gateway_id)
        yield
        gc_timer.remove()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
    # Tenancy settled its leases and stored its cache entries on leaving the block: Redis goes last.
    with contextlib.suppress(RedisError, OSError):
        await redis.delete(keys.gateway_heartbeat(gateway_id))
    await hub.close()
    await redis.aclose()
    log.info("gateway_stopped", gateway_id=gateway_id)


async def _heartbeat_forever(services: GatewayServices) -> None:
    key = keys.gateway_heartbeat(services.gateway_id)
    while True:
        try:
            await services.redis.set(key, msgpack.packb({
                "gateway_id": services.gateway_id, "sessions": len(services.registry.sessions),
                "contexts": services.registry.live_contexts(), "draining": services.draining,
                "at": time.time()}), px=5000)
        except (RedisError, OSError):
            pass
        await asyncio.sleep(1.0)


async def _drain(app: web.Application) -> None:
    """Graceful shutdown: refuse new sessions, let live contexts finish, then close with 1001."""
    services = app.get(SERVICES)
    if services is None:
        return
    services.state.draining = True
    grace = services.settings.drain_grace_s
    deadline = time.monotonic() + grace
    log.info("gateway_draining", sessions=len(services.registry.sessions),
             contexts=services.registry.live_contexts(), grace_s=grace)
    while services.registry.live_contexts() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for session in list(services.registry.sessions.values()):
        session.close_with(ShuttingDown("gateway is restarting; reconnect"))
    # Give writers a moment to send the close frames.
    end = time.monotonic() + 2.0
    while services.registry.sessions and time.monotonic() < end:
        await asyncio.sleep(0.02)
