"""``python -m worker``: run one worker process with its metrics/health port."""

from __future__ import annotations

import asyncio
import contextlib

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
    try:
        import uvloop

        uvloop.run(amain(settings))
    except ImportError:
        asyncio.run(amain(settings))


if __name__ == "__main__":
    main()
