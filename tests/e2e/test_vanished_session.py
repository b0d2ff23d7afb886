"""A job whose session is gone is dropped quietly: no upstream work, no error spam."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import structlog
from gateway.dispatch import Dispatcher

from shared import protocol
from shared.redis_client import create_redis
from tests.conftest import fast_settings
from tests.support.scrape import metric
from tests.support.stack import running_worker, worker_http


async def test_job_for_vanished_session_is_dropped(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=("local",))
    orphaned = {"provider": "local", "outcome": "orphaned"}
    redis = create_redis(redis_url)
    try:
        async with running_worker(settings) as worker, worker_http(worker) as wbase, aiohttp.ClientSession() as http:
            before = await metric(http, wbase, "tts_jobs_total", **orphaned)
            spec = protocol.JobSpec(job_id="j-vanished", session_id="nobody-listens", context_id="c",
                                    provider="local", voice_id="joe", model_id="", output_format="pcm_16000",
                                    text="Nobody will hear this.", input_closed=True, enqueued_at=time.time())
            with structlog.testing.capture_logs() as logs:
                await Dispatcher(redis, settings.queue_name).enqueue(spec)
                async with asyncio.timeout(10):
                    while await metric(http, wbase, "tts_jobs_total", **orphaned) == before:
                        await asyncio.sleep(0.02)
            assert not [e for e in logs if e["log_level"] in ("warning", "error", "critical")], logs
            assert await redis.zcard(settings.queue_name) == 0
            assert not [k async for k in redis.scan_iter(match="tts:input:*")]
    finally:
        await redis.aclose()
