"""OpenTelemetry for contexts: per-process set-up, and the W3C trace context carried on the job.

Off by default: without an exporter no span is created at all (the per-hop breakdown in shared/hops.py
is recorded anyway and goes into the summary log and the ``final`` event). :func:`setup` turns spans on
when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and
the ``otlp`` extra is installed; the exporter, sampler and resource read the other standard ``OTEL_*``
variables themselves (``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_HEADERS``,
...), which is why this module reads the environment rather than Settings: they are OpenTelemetry's
own interface, documented by it. Tests call :func:`install` with an in-memory exporter.

The trace context crosses Redis as a small dict on the job (``{"traceparent": ..., "tracestate": ...}``,
W3C Trace Context). A client's ``traceparent`` is joined (our spans become its children); an invalid
one is ignored, as W3C requires, never an error. The propagator is OpenTelemetry's own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.logging import get_logger

log = get_logger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
# traceparent is 55 characters; tracestate is at most 32 members (W3C caps what vendors keep at 512).
_CARRIER_KEYS = ("traceparent", "tracestate")
_MAX_VALUE = 512
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None

Carrier = dict[str, str]
Context = otel_context.Context


def setup(service_name: str, env: Mapping[str, str] = os.environ) -> bool:
    """Export spans over OTLP/HTTP if an endpoint is configured and the exporter is installed."""
    if not (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning("otlp_exporter_missing", hint="install the otlp extra: pip install 'tts-gateway[otlp]'")
        return False
    install(BatchSpanProcessor(OTLPSpanExporter()), service_name)
    log.info("tracing_enabled", exporter="otlp")
    return True


def install(processor: SpanProcessor, service_name: str) -> TracerProvider:
    """Record spans into ``processor`` from now on (replacing any earlier set-up of this process)."""
    global _provider, _tracer
    shutdown()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("tts-gateway")
    return provider


def shutdown() -> None:
    """Flush and stop span export (process exit); spans are off afterwards."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def tracer() -> trace.Tracer | None:
    """The tracer, or None when spans are off (callers then skip span work entirely)."""
    return _tracer


def clean_carrier(raw: Any) -> Carrier:
    """The trace-context entries of a header map or a job's dict: known keys, strings, bounded length."""
    if raw is None:
        return {}
    out: Carrier = {}
    for key in _CARRIER_KEYS:
        value = raw.get(key) if hasattr(raw, "get") else None
        if isinstance(value, str) and 0 < len(value) <= _MAX_VALUE:
            out[key] = value
    return out


def extract(carrier: Mapping[str, str]) -> Context:
    """The parent context a carrier names; an empty context when it names none or is invalid."""
    if not carrier:
        return otel_context.Context()
    return _PROPAGATOR.extract(carrier)


def inject(ctx: Context) -> Carrier:
    """The carrier for a context (empty when it holds no valid span)."""
    carrier: Carrier = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return carrier


def trace_id_of(ctx: Context) -> str | None:
    """The 32-hex-digit trace id of a context's span, or None."""
    sc = trace.get_current_span(ctx).get_span_context()
    return format(sc.trace_id, "032x") if sc.is_valid else None


def ns(wall_seconds: float) -> int:
    """Wall-clock seconds as the nanoseconds OpenTelemetry timestamps use."""
    return int(wall_seconds * 1e9)


def hop_spans(tr: trace.Tracer, parent: Context, at: dict[str, float], hops: tuple[str, ...]) -> None:
    """Emit one finished span per hop in ``hops`` that exists, as children of ``parent``: the hops of
    the breakdown (shared/hops.py ``hop_bounds``), so no zero-length ``retry`` for a first attempt.

    A span of a cross-process hop (its two ends stamped by different processes' wall clocks) carries
    ``tts.wall_clocks``: its length includes the clock skew between the two hosts.
    """
    from shared.hops import CROSS_PROCESS, hop_bounds

    for hop, start, end in hop_bounds(at, hops):
        t0, t1 = ns(start), ns(end)
        # Attributes only where they say something (each costs the SDK a validation): the name is the hop.
        span = tr.start_span(f"tts.{hop}", context=parent, start_time=t0,
                             attributes={"tts.wall_clocks": True} if hop in CROSS_PROCESS else None)
        span.end(end_time=max(t0, t1))
