"""``/_emulator/*``: change config, read and reset stats from another process (fault injection)."""

from __future__ import annotations

import json

from aiohttp import web

from emulator.config import coerce_changes
from emulator.state import STATE_KEY


async def get_config(request: web.Request) -> web.StreamResponse:
    """``GET /_emulator/config``: the config in force (API key masked)."""
    return web.json_response(request.app[STATE_KEY].config.to_json())


async def post_config(request: web.Request) -> web.StreamResponse:
    """``POST /_emulator/config``: apply a partial update, e.g. ``{"drop_after_chunks": 3, "fault_sockets": 1}``."""
    state = request.app[STATE_KEY]
    try:
        body = await request.json(loads=json.loads)
        if not isinstance(body, dict):
            raise TypeError("body must be a JSON object of config fields")
        state.set_config(**coerce_changes(body))
    except (ValueError, TypeError) as e:
        return web.json_response({"error": str(e)}, status=400)
    return web.json_response(state.config.to_json())


async def get_stats(request: web.Request) -> web.StreamResponse:
    """``GET /_emulator/stats``."""
    return web.json_response(request.app[STATE_KEY].stats.snapshot())


async def reset_stats(request: web.Request) -> web.StreamResponse:
    """``POST /_emulator/stats/reset``: zero the counters."""
    state = request.app[STATE_KEY]
    state.reset_stats()
    return web.json_response(state.stats.snapshot())


async def reset(request: web.Request) -> web.StreamResponse:
    """``POST /_emulator/reset``: the start-up config, a re-armed fault budget and zeroed stats."""
    state = request.app[STATE_KEY]
    state.reset()
    return web.json_response({"config": state.config.to_json(), "stats": state.stats.snapshot()})


async def health(request: web.Request) -> web.StreamResponse:
    """``GET /_emulator/health``: liveness for scripts waiting on the process."""
    return web.json_response({"ok": True, "sessions": len(request.app[STATE_KEY].sessions)})


def add_routes(app: web.Application) -> None:
    """Register the control endpoints under ``/_emulator``."""
    app.router.add_get("/_emulator/config", get_config)
    app.router.add_post("/_emulator/config", post_config)
    app.router.add_get("/_emulator/stats", get_stats)
    app.router.add_post("/_emulator/stats/reset", reset_stats)
    app.router.add_post("/_emulator/reset", reset)
    app.router.add_get("/_emulator/health", health)
