"""The gateway's side of a context's trace: its marks, its spans, and the trace context it hands the job.

A :class:`ContextTrace` lives on each ContextState. The gateway stamps ``received`` (the context's
creation), ``admitted``/``enqueue_start`` (the job is built: ContextState.job_spec), ``enqueued`` (the
enqueue round trip returned), ``gw_received`` (the first chunk routed, gateway/accounting.py) and
``client_sent`` (an adapter wrote that chunk to its client: :func:`mark_sent`); the worker's marks arrive
in its Final (:meth:`ContextTrace.merge_worker`). :meth:`ContextTrace.timings` turns them into ms per hop
(shared/hops.py) for the ``final`` event and the summary line.

With spans on (shared/tracing.py), the context is one ``tts.context`` span, a child of the client's
``traceparent`` when it sent a valid one, and the gateway's hops (admission, enqueue, claim, gateway
receive, client send) are its children, emitted with their measured times when the context ends. The
job carries the context span's trace context, so the worker's ``tts.job`` span joins the same trace.
With spans off nothing is created; a client's ``traceparent`` is still passed through to the job and its
trace id still appears in the log and the final event.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace

from shared import hops, tracing

if TYPE_CHECKING:
    from aiohttp import web


def request_carrier(request: web.Request) -> tracing.Carrier:
    """The W3C trace context of an HTTP request or WebSocket upgrade (empty when it has none)."""
    return tracing.clean_carrier(request.headers)


class ContextTrace:
    """Marks and (when spans are on) the span of one context at the gateway."""

    __slots__ = ("_ctx", "_finished", "_parent", "_span", "marks")

    def __init__(self, parent: Mapping[str, str] | None = None, received: float | None = None) -> None:
        self.marks = hops.Marks()
        self.marks.mark(hops.RECEIVED, received)
        self._parent = tracing.extract(parent or {})
        self._span: trace.Span | None = None
        self._ctx: tracing.Context | None = None  # the context span's (or, spans off, the parent's)
        self._finished = False

    # ---- marks ---------------------------------------------------------------------------------------
    def text_arrived(self) -> None:
        """A context started without text got its first: the first-audio path starts here, so the
        client's own pause between init and text is no hop (its admission was done at the init)."""
        self.marks.restamp(hops.RECEIVED)

    def enqueue_started(self) -> None:
        """A job is being built and enqueued (first attempt: admission is over; a retry: again)."""
        now = time.monotonic()
        self.marks.mark(hops.ADMITTED, now)  # first attempt: the same instant, so no ``retry`` hop
        self.marks.restamp(hops.ENQUEUE_START, now)
        self.marks.at.pop(hops.ENQUEUED, None)  # a retry's enqueue has not returned yet

    def enqueued(self) -> None:
        """The enqueue round trip returned."""
        self.marks.restamp(hops.ENQUEUED)

    def first_audio(self, mono: float) -> None:
        """The first chunk was routed to the client's adapter (a cache hit: admission ends here too)."""
        self.marks.mark(hops.ADMITTED, mono)
        self.marks.mark(hops.GW_RECEIVED, mono)

    def client_sent(self) -> None:
        """The first chunk went out on the client's socket."""
        self.marks.mark(hops.CLIENT_SENT)

    def merge_worker(self, timings: Any) -> None:
        """The worker's marks from its Final (unknown names and non-numbers are dropped)."""
        self.marks.merge(timings)

    # ---- reporting -----------------------------------------------------------------------------------
    def timings(self) -> dict[str, float]:
        """Milliseconds per hop so far, in path order (see shared/hops.py)."""
        return hops.breakdown(self.marks.at)

    @property
    def trace_id(self) -> str | None:
        """The trace this context belongs to (ours, or the client's when spans are off), if any."""
        return tracing.trace_id_of(self._context())

    def carrier(self) -> tracing.Carrier:
        """The trace context the job carries to the worker (starts the context span if spans are on)."""
        return tracing.inject(self._context())

    def finish(self, outcome: str, code: str | None = None, **attributes: Any) -> None:
        """The context ended: emit the hop spans measured so far and end the context span (once)."""
        if self._finished:
            return
        self._finished = True
        tr = tracing.tracer()
        if tr is None:
            return
        self._context()
        assert self._span is not None and self._ctx is not None
        at = self.marks.at
        tracing.hop_spans(tr, self._ctx, at, hops.GATEWAY_HOPS)
        self._span.set_attributes({"tts.outcome": outcome, **({"tts.error_code": code} if code else {}),
                                   **{k: v for k, v in attributes.items() if v is not None}})
        self._span.end()

    def _context(self) -> tracing.Context:
        if self._ctx is None:
            tr = tracing.tracer()
            if tr is None:
                self._ctx = self._parent
            else:
                self._span = tr.start_span("tts.context", context=self._parent, kind=trace.SpanKind.SERVER,
                                           start_time=tracing.ns(self.marks.at[hops.RECEIVED]))
                self._ctx = trace.set_span_in_context(self._span, self._parent)
        return self._ctx


class _Traced(Protocol):
    """An event that may carry its context's trace (gateway.events.AudioEvent; typed structurally so
    events -> ctxtrace stays the only direction between the two modules)."""

    @property
    def trace(self) -> ContextTrace | None: ...


def mark_sent(event: _Traced) -> None:
    """An adapter wrote ``event`` to its client: the first chunk's send ends the traced path."""
    if event.trace is not None:
        event.trace.client_sent()
