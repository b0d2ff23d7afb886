"""The worker's spans of one job (worker/jobtrace.py) against a real Redis and a real Publisher.

Redis is made slow to acknowledge with ``CLIENT PAUSE ... WRITE`` (PUBLISH counts as a write): the
job's first frame is then still unacknowledged when its Final leaves, as on a busy worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from worker.jobtrace import JobTrace
from worker.publisher import Publisher

from shared import hops, protocol, tracing
from shared.redis_client import create_redis
from shared.redis_server import free_port

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
WORKER_SPANS = {"tts.job", *(f"tts.{hop}" for hop in hops.WORKER_HOPS)}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = create_redis(redis_url)
    yield client
    await client.execute_command("CLIENT", "UNPAUSE")
    await client.aclose()


@pytest.fixture
async def publisher(redis: aioredis.Redis) -> AsyncIterator[Publisher]:
    pub = Publisher(redis)
    pub.start()
    yield pub
    await pub.close()


def _spec() -> protocol.JobSpec:
    return protocol.JobSpec("j1", "s1", "c1", "local", "v", "m", "pcm_16000", text="Hello.",
                            trace={"traceparent": TRACEPARENT})


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    got = {s.name: s for s in exporter.get_finished_spans()}
    assert WORKER_SPANS <= set(got), f"missing spans: {sorted(WORKER_SPANS - set(got))}"
    return got


async def _first_frame_out(trace: JobTrace, publisher: Publisher) -> None:
    """The job's path up to its first frame queued for PUBLISH."""
    trace.inputs_open()
    trace.text_sent("Hello.")
    trace.audio_published(publisher.publish("chan", b"frame-0"))


async def test_an_ack_later_than_the_final_still_ends_the_publish_span(
        spans: InMemorySpanExporter, redis: aioredis.Redis, publisher: Publisher) -> None:
    # Acks held back for a second: longer than the Final waits for one, shorter than the job's end.
    await redis.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
    trace = JobTrace(_spec())
    await _first_frame_out(trace, publisher)
    timings = await trace.timings()
    assert hops.FIRST_AUDIO in timings and hops.PUBLISHED not in timings  # the Final left before the ack

    await trace.finish("completed")
    got = _by_name(spans)
    publish = got["tts.publish"]
    assert publish.status.status_code is not StatusCode.ERROR
    assert publish.end_time == tracing.ns(trace.marks.at[hops.PUBLISHED])  # ends at the ack itself
    job = got["tts.job"]
    assert publish.parent is not None and publish.parent.span_id == job.context.span_id


async def test_an_ack_that_came_in_time_needs_no_wait(spans: InMemorySpanExporter, publisher: Publisher) -> None:
    trace = JobTrace(_spec())
    await _first_frame_out(trace, publisher)
    await trace.timings()
    assert hops.PUBLISHED in trace.marks.at
    await trace.finish("completed")
    assert _by_name(spans)["tts.publish"].status.status_code is not StatusCode.ERROR


async def test_an_ack_that_never_comes_ends_the_publish_span_in_error(
        spans: InMemorySpanExporter, redis: aioredis.Redis, publisher: Publisher) -> None:
    await redis.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")  # lifted by the fixture
    trace = JobTrace(_spec(), ack_deadline_s=0.2)
    await _first_frame_out(trace, publisher)
    await trace.finish("completed")
    publish = _by_name(spans)["tts.publish"]
    assert publish.status.status_code is StatusCode.ERROR
    assert publish.attributes is not None and publish.attributes["tts.publish_acked"] is False
    assert hops.PUBLISHED not in trace.marks.at


async def test_a_failed_publish_ends_the_publish_span_in_error(spans: InMemorySpanExporter) -> None:
    # Nothing listens on a free port: the PUBLISH fails rather than being acknowledged.
    dead = Publisher(create_redis(f"redis://127.0.0.1:{free_port()}"))
    dead.start()
    try:
        trace = JobTrace(_spec())
        await _first_frame_out(trace, dead)
        await trace.finish("failed")
    finally:
        await dead.close()
    publish = _by_name(spans)["tts.publish"]
    assert publish.status.status_code is StatusCode.ERROR
    assert publish.status.description is not None and "ConnectionError" in publish.status.description


async def test_spans_off_finish_returns_at_once_with_the_ack_outstanding(
        redis: aioredis.Redis, publisher: Publisher) -> None:
    assert tracing.tracer() is None
    await redis.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    trace = JobTrace(_spec(), ack_deadline_s=30.0)
    await _first_frame_out(trace, publisher)
    async with asyncio.timeout(5):  # spans off, the job's end waits for nothing
        await trace.finish("completed")
    assert hops.PUBLISHED not in trace.marks.at
