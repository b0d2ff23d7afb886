"""``python -m worker``: run one worker process with its metrics/health port."""

from __future__ import annotations

import asyncio
import contextlib

from redis.exceptions import AuthenticationError

from shared import tracing
from shared.logging import configure, get_logger
from shared.settings import Settings
from worker.app import build_worker
from worker.health import start_health_server

log = get_logger("worker")


async def amain(settings: Settings) -> None:
    worker = build_worker(settings)
    health = await start_health_server(worker, settings.worker_metrics_host, settings.worker_metrics_port)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await worker.async_run()
    finally:
        await worker.close()
        await health.cleanup()


def main() -> None:
    settings = Settings.from_env()
    configure(settings.log_level, settings.log_format, settings.secrets(), service="worker")
    tracing.setup("tts-worker")  # spans only with an OTLP endpoint configured (OTEL_* variables)
    try:
        try:
            import uvloop

            uvloop.run(amain(settings))
        except ImportError:
            asyncio.run(amain(settings))
    except AuthenticationError as e:
        # A configuration error, not an outage to ride out: say which variable, exit like a bad setting.
        log.error("redis_auth_failed", error=str(e), hint="REDIS_URL: Redis refused its user or password")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
