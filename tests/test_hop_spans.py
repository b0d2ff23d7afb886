"""Hop spans (shared/tracing.py) say what the breakdown (shared/hops.py) says: the same hops, the same lengths."""

from __future__ import annotations

import asyncio

import pytest
from gateway.ctxtrace import ContextTrace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import hops, tracing


def _hop_spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    out = {}
    for s in exporter.get_finished_spans():
        if s.name.startswith("tts.") and s.name[4:] in hops.HOPS:
            assert s.name[4:] not in out, f"two spans for {s.name}"
            out[s.name[4:]] = s
    return out


def _path(retried_s: float) -> dict[str, float]:
    """Marks of a whole path, 1 ms apart; a retry (``retried_s`` > 0) lost that long before the enqueue."""
    at = {name: 1000.0 + i * 0.001 for i, name in enumerate(hops.MARKS)}
    at[hops.ENQUEUE_START] = at[hops.ADMITTED] + retried_s
    return at


@pytest.mark.parametrize("retried_s", [0.0, 0.25])
def test_the_spans_are_the_breakdown(spans: InMemorySpanExporter, retried_s: float) -> None:
    at = _path(retried_s)
    tr = tracing.tracer()
    assert tr is not None
    tracing.hop_spans(tr, tracing.extract({}), at, tuple(hops.HOPS))
    got = _hop_spans(spans)
    breakdown = hops.breakdown(at)
    assert list(got) == list(breakdown)  # no span for a hop the breakdown does not have, and vice versa
    for hop, span in got.items():
        assert span.start_time is not None and span.end_time is not None
        assert abs((span.end_time - span.start_time) / 1e6 - breakdown[hop]) < 0.01, hop
    assert (hops.RETRY in got) == (retried_s > 0)


def test_a_context_never_retried_has_no_retry_span(spans: InMemorySpanExporter) -> None:
    trace = ContextTrace()
    trace.enqueue_started()  # first attempt: admitted and enqueue_start are the same instant
    trace.enqueued()
    trace.finish("completed")
    got = _hop_spans(spans)
    assert hops.RETRY not in got and hops.RETRY not in trace.timings()
    assert {hops.ADMISSION, hops.ENQUEUE} <= set(got)


async def test_a_retried_context_has_its_retry_span(spans: InMemorySpanExporter) -> None:
    trace = ContextTrace()
    trace.enqueue_started()
    trace.enqueued()
    await asyncio.sleep(0.01)  # the failed attempt took some time
    trace.enqueue_started()  # the first attempt failed before audio: enqueued again
    trace.enqueued()
    trace.finish("completed")
    got = _hop_spans(spans)
    assert hops.RETRY in got and hops.RETRY in trace.timings()
