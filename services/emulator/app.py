"""The aiohttp application factory: HTTP API, both TTS WebSockets and the control endpoints."""

from __future__ import annotations

import asyncio

from aiohttp import web

from emulator import control, http_api
from emulator.config import EmulatorConfig
from emulator.multi_stream import multi_stream_handler
from emulator.single_stream import single_stream_handler
from emulator.state import STATE_KEY, EmulatorState


async def _close_sessions(app: web.Application) -> None:
    # Open sockets would otherwise hold shutdown until their clients leave.
    sessions = list(app[STATE_KEY].sessions)
    for session in sessions:
        session.shutdown()
    deadline = asyncio.get_running_loop().time() + 3.0
    while app[STATE_KEY].sessions and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


def create_app(config: EmulatorConfig | None = None, state: EmulatorState | None = None) -> web.Application:
    """Build the emulator app (synchronous, no I/O); pass ``state`` to share it with a runner."""
    app = web.Application(middlewares=[http_api.api_error_middleware, http_api.concurrency_middleware])
    app[STATE_KEY] = state if state is not None else EmulatorState(config or EmulatorConfig())
    app.router.add_get("/v1/text-to-speech/{voice_id}/multi-stream-input", multi_stream_handler)
    app.router.add_get("/v1/text-to-speech/{voice_id}/stream-input", single_stream_handler)
    http_api.add_routes(app)
    control.add_routes(app)
    app.on_shutdown.append(_close_sessions)
    return app
