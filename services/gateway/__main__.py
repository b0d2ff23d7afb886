"""``python -m gateway``: serve the gateway on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import ssl
import sys

from aiohttp import web
from redis.exceptions import AuthenticationError

from gateway.app import create_app
from shared import tracing
from shared.logging import configure, get_logger
from shared.settings import Settings, SettingsError
from shared.ws_frames import write_frames_whole

log = get_logger("gateway")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A server TLS context from TLS_CERT_FILE/TLS_KEY_FILE, or None to serve plain HTTP/ws."""
    if not settings.tls_cert_file or not settings.tls_key_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return ctx


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        sys.exit(f"gateway: {e}")  # the message names the variable; a traceback would only bury it
    configure(settings.log_level, settings.log_format, settings.secrets(), service="gateway")
    tracing.setup("tts-gateway")  # spans only with an OTLP endpoint configured (OTEL_* variables)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    import asyncio

    loop = loop_factory() if loop_factory else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    write_frames_whole()  # one send per audio frame, not two (see shared/ws_frames.py)
    app = create_app(settings)
    tls = ssl_context(settings)
    scheme = "https" if tls else "http"
    print(f"gateway listening on {scheme}://{settings.gateway_host}:{settings.gateway_port}", flush=True)
    try:
        web.run_app(app, host=settings.gateway_host, port=settings.gateway_port, print=None, ssl_context=tls,
                    shutdown_timeout=settings.drain_grace_s + 5, access_log=None, loop=loop,
                    handler_cancellation=True,
                    # aiohttp's only header deadline: it runs from the connection's start (and from each
                    # response on), so a client trickling its headers is cut off after this too.
                    keepalive_timeout=settings.header_read_timeout_s)
    except AuthenticationError as e:
        # A configuration error, not an outage to ride out: say which variable, exit like a bad setting.
        log.error("redis_auth_failed", error=str(e), hint="REDIS_URL: Redis refused its user or password")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
