"""Per-context trace with every service its own process: the summary line's breakdown, OTLP export.

The ElevenLabs-compatible endpoints keep ElevenLabs' fixed final frame; their breakdown is in the
gateway's ``context_summary`` line. With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, gateway and worker export
their spans over OTLP/HTTP, here to a receiver in this test that decodes the protobuf requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shared import hops
from tests.compat.elclient import ElClient
from tests.faults.support import VOICE, start_stack, until
from tests.support.procs import Procs

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
PATH_HOPS = [h for h in hops.HOPS if h != hops.RETRY]


async def _speak_el(base: str, cid: str) -> dict[str, Any]:
    """One multi-stream-input context with a traceparent on the upgrade; returns its final frame."""
    async with aiohttp.ClientSession() as http, \
            ElClient.connect(base, http, voice=VOICE, headers={"traceparent": TRACEPARENT},
                             output_format="pcm_16000") as c:
        await c.send(text=" ", context_id=cid)
        await c.send(text="Where did this context spend its time? ", context_id=cid, flush=True)
        await c.send(context_id=cid, close_context=True)
        await c.pump_until(lambda c: c.final(cid))
        assert not c.get(cid).errors and c.get(cid).chunks
        return c.frames[-1]


async def test_elevenlabs_context_summary_line_carries_the_breakdown(procs: Procs, redis_url: str) -> None:
    stack = await start_stack(procs, redis_url)
    final = await _speak_el(stack.base, "slow-one")
    assert final["isFinal"] is True and "timings" not in final  # ElevenLabs' own schema, unchanged

    def summary() -> dict[str, Any] | None:
        return next((r for r in stack.gateway.events("context_summary") if r.get("outcome") == "completed"), None)

    async def logged() -> bool:
        return summary() is not None
    await until(logged, 10, "context_summary line")
    line = summary()
    assert line is not None
    assert line["trace_id"] == TRACE_ID  # the client's trace, passed through with spans off
    timings = line["timings"]
    assert list(timings) == PATH_HOPS, timings
    assert all(v >= 0 for v in timings.values())
    # The hops tile received -> first chunk sent; TTFA runs from the first non-blank text (later), so the
    # sum exceeds it only by the time the client took to send that text after its " " init.
    assert line["ttfa_ms"] is not None and sum(timings.values()) >= line["ttfa_ms"] - 1.0


@contextlib.asynccontextmanager
async def _otlp_receiver() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """An OTLP/HTTP trace endpoint on a free port that keeps what it is sent."""
    got: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        got.append(msg)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", got
    finally:
        await runner.cleanup()


def _spans(got: list[ExportTraceServiceRequest]) -> dict[str, list[tuple[str, Any]]]:
    """Span name -> [(service.name, span)] over everything received."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for req in got:
        for rs in req.resource_spans:
            service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.setdefault(span.name, []).append((service, span))
    return out


async def test_spans_are_exported_over_otlp_and_join_the_client_trace(procs: Procs, redis_url: str) -> None:
    async with _otlp_receiver() as (endpoint, got):
        # A short batch delay so the test need not wait the default 5 s for the export.
        otel: dict[str, Any] = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": 50}
        stack = await start_stack(procs, redis_url, **otel)
        await _speak_el(stack.base, "exported")

        # Every span of the context, whichever process and batch it comes in; a missing one is named.
        expected = {"tts.context", "tts.job", *(f"tts.{hop}" for hop in PATH_HOPS)}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                while not expected <= set(_spans(got)):
                    await asyncio.sleep(0.05)
        missing = sorted(expected - set(_spans(got)))
        assert not missing, f"spans never exported: {missing}"
        await asyncio.sleep(0.2)  # a duplicate would come in the same or the next batch
    spans = _spans(got)
    (ctx_service, ctx_span), = spans["tts.context"]
    (job_service, job_span), = spans["tts.job"]
    assert (ctx_service, job_service) == ("tts-gateway", "tts-worker")
    assert ctx_span.trace_id.hex() == job_span.trace_id.hex() == TRACE_ID
    assert ctx_span.parent_span_id.hex() == PARENT_SPAN  # the client's span
    assert job_span.parent_span_id == ctx_span.span_id  # carried across Redis in the job
    assert "tts.retry" not in spans  # never retried: no zero-length span for it
    for hop in PATH_HOPS:
        (service, span), = spans[f"tts.{hop}"]
        assert service == ("tts-worker" if hop in hops.WORKER_HOPS else "tts-gateway"), hop
        assert span.trace_id.hex() == TRACE_ID and span.end_time_unix_nano >= span.start_time_unix_nano
