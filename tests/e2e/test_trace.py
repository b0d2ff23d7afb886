"""Per-context trace (issue 16.1): ms per hop in the final event, spans per hop, a client's traceparent joined.

Gateway and worker run in this process (tests/support/stack.py), so the SDK's in-memory exporter sees
the spans of both; the upstream is the emulator on a real port, Redis a real server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emulator.runner import DEFAULT_VOICE_ID
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import hops, tracing
from tests.e2e.test_emulated_upstream import el_stack
from tests.support.stack import NativeClient

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
# Every hop of a context that ran on a worker without a retry.
PATH_HOPS = [h for h in hops.HOPS if h != hops.RETRY]


@pytest.fixture
async def stack(redis_url: str) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    async with el_stack(redis_url) as (base, http, _emu):
        yield base, http


async def _speak_timed(client: NativeClient, cid: str, text: str, **start: Any) -> tuple[dict[str, Any], float]:
    """(final event, ms from sending start to the first audio frame) as the client saw them."""
    t0 = time.monotonic()
    await client.send(type="start", context_id=cid, text=text, end=True, format="pcm_16000", **start)
    await client.pump_until(lambda c: bool(c.result(cid).frames) or c.ended(cid))
    ttfa_ms = (time.monotonic() - t0) * 1000
    await client.pump_until(lambda c: c.ended(cid))
    res = client.result(cid)
    assert res.final is not None and res.final["reason"] == "completed", res.error
    return res.final, ttfa_ms


def _check_breakdown(final: dict[str, Any], client_ttfa_ms: float) -> None:
    timings = final["timings"]
    assert list(timings) == PATH_HOPS, timings
    assert all(isinstance(v, float | int) and v >= 0 for v in timings.values()), timings
    # The hops tile the gateway's part of the first-audio path, which lies inside the client's own
    # measurement (1 ms: rounding and the two processes' wall clocks, here the same clock).
    assert sum(timings.values()) <= client_ttfa_ms + 1.0, (timings, client_ttfa_ms)
    assert timings[hops.UPSTREAM_FIRST_AUDIO] > 0  # the emulator's time to first byte is real


def _by_name(exporter: InMemorySpanExporter, trace_id: int) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in exporter.get_finished_spans():
        if s.context is not None and s.context.trace_id == trace_id:
            out.setdefault(s.name, []).append(s)
    return out


async def _wait_spans(exporter: InMemorySpanExporter, trace_id: int, name: str) -> dict[str, list[ReadableSpan]]:
    async with asyncio.timeout(5):
        while name not in (got := _by_name(exporter, trace_id)):
            await asyncio.sleep(0.02)  # the worker ends its job span just after publishing the Final
    return got


async def test_native_final_has_every_hop_and_joins_the_upgrade_traceparent(stack, spans) -> None:
    base, http = stack
    async with NativeClient.connect(base, http, headers={"traceparent": TRACEPARENT}) as client:
        final, ttfa_ms = await _speak_timed(client, "t1", "Where did the time go?")
    _check_breakdown(final, ttfa_ms)
    assert final["trace_id"] == TRACE_ID

    got = await _wait_spans(spans, int(TRACE_ID, 16), "tts.job")
    (ctx_span,) = got["tts.context"]
    assert ctx_span.parent is not None and ctx_span.parent.span_id == int(PARENT_SPAN, 16)  # joined
    (job,) = got["tts.job"]
    assert job.parent is not None and job.parent.span_id == ctx_span.context.span_id  # across Redis
    for hop in PATH_HOPS:
        (span,) = got[f"tts.{hop}"]
        parent = job if hop in hops.WORKER_HOPS else ctx_span
        assert span.parent is not None and span.parent.span_id == parent.context.span_id, hop
        assert span.start_time is not None and span.end_time is not None
        # Each span lasts what the final event reports for its hop (ns vs ms rounded to µs), except that the
        # worker's publish span runs to Redis' ack, which the final counts only until the gateway had the frame.
        lasted = (span.end_time - span.start_time) / 1e6
        if hop == hops.PUBLISH:
            assert lasted >= final["timings"][hop] - 0.01
        else:
            assert abs(lasted - final["timings"][hop]) < 0.01, hop
    assert ctx_span.attributes is not None and ctx_span.attributes["tts.outcome"] == "completed"
    assert "tts.retry" not in got  # never retried: no span for it, as no hop in the final event


async def test_start_message_traceparent_wins_and_malformed_ones_are_ignored(stack, spans) -> None:
    base, http = stack
    other = "0af7651916cd43dd8448eb211c80319c"
    async with NativeClient.connect(base, http, headers={"traceparent": "00-not-a-trace-01"}) as client:
        joined, _ = await _speak_timed(client, "j", "Joined.", traceparent=f"00-{other}-b7ad6b7169203331-01")
        # Malformed in the upgrade and in the message (a wrong type too): never an error, just not joined.
        fresh, _ = await _speak_timed(client, "f", "Fresh.", traceparent=42)
        bad, _ = await _speak_timed(client, "b", "Bad.", traceparent="00-zz-yy-01", tracestate="x" * 5000)
    assert joined["trace_id"] == other
    for final in (fresh, bad):
        assert final["trace_id"] not in (other, TRACE_ID) and len(final["trace_id"]) == 32
        (root,) = (await _wait_spans(spans, int(final["trace_id"], 16), "tts.job"))["tts.context"]
        assert root.parent is None  # a new trace of its own
    assert not client.session_errors and all(r.error is None for r in client.results.values())


async def test_spans_off_still_time_every_hop_and_pass_the_client_trace_through(stack) -> None:
    base, http = stack
    assert tracing.tracer() is None
    async with NativeClient.connect(base, http) as client:
        plain, ttfa_ms = await _speak_timed(client, "p", "No trace at all.")
        traced, _ = await _speak_timed(client, "t", "A client trace.", traceparent=TRACEPARENT)
    _check_breakdown(plain, ttfa_ms)
    assert "trace_id" not in plain
    assert traced["trace_id"] == TRACE_ID and list(traced["timings"]) == PATH_HOPS



async def test_http_traceparent_is_joined_and_the_stream_times_its_first_write(stack, spans) -> None:
    base, http = stack
    async with http.post(f"{base}/v1/text-to-speech/{DEFAULT_VOICE_ID}/stream?output_format=pcm_16000",
                         json={"text": "Over plain HTTP."}, headers={"traceparent": TRACEPARENT}) as resp:
        assert resp.status == 200
        assert len(await resp.read()) > 0
    got = await _wait_spans(spans, int(TRACE_ID, 16), "tts.job")
    (ctx_span,) = got["tts.context"]
    assert ctx_span.parent is not None and ctx_span.parent.span_id == int(PARENT_SPAN, 16)
    for hop in PATH_HOPS:  # client_send too: the streamed body's first write is timed
        assert f"tts.{hop}" in got, hop
