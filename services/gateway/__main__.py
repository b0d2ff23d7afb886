"""``python -m gateway``: serve the gateway on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

from aiohttp import web

from gateway.app import create_app
from shared.logging import configure, get_logger
from shared.settings import Settings

log = get_logger("gateway")


def main() -> None:
    settings = Settings.from_env()
    configure(settings.log_level, settings.log_format, settings.secrets(), service="gateway")
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    import asyncio

    loop = loop_factory() if loop_factory else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(settings)
    print(f"gateway listening on http://{settings.gateway_host}:{settings.gateway_port}", flush=True)
    web.run_app(app, host=settings.gateway_host, port=settings.gateway_port, print=None,
                shutdown_timeout=settings.drain_grace_s + 5, access_log=None, loop=loop,
                handler_cancellation=True)


if __name__ == "__main__":
    main()
