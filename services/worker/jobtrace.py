"""The worker's side of a context's trace: the marks of one job, sent back in its Final, and its spans.

A :class:`JobTrace` is created when the job is entered (``claimed``) and stamps ``inputs_open`` (JobStarted
queued and the provider's stream open), ``text_sent`` (the first non-blank text handed to the upstream),
``first_audio`` (the upstream's first chunk in hand, queued for PUBLISH) and ``published`` (Redis
acknowledged that PUBLISH). :meth:`JobTrace.timings` is what the Final carries (shared/hops.py: mark ->
wall-clock seconds); the gateway turns it, with its own marks, into ms per hop.

With spans on (shared/tracing.py) the job is one ``tts.job`` span, a child of the trace context the
job carries (the gateway's ``tts.context`` span), with a span per worker hop (input delivery, upstream
send, upstream first audio, publish), emitted with their measured times when the job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from opentelemetry import trace

from shared import hops, protocol, tracing

# How long the Final waits for the first frame's PUBLISH acknowledgement it reports (the publisher is
# FIFO, so it normally came long before; a single-chunk context may still have it in flight).
_ACK_WAIT_S = 0.05


class JobTrace:
    """Marks and (when spans are on) spans of one job attempt."""

    __slots__ = ("_first_ack", "_parent", "marks")

    def __init__(self, spec: protocol.JobSpec) -> None:
        self.marks = hops.Marks()
        self.marks.mark(hops.CLAIMED)
        self._parent = spec.trace
        self._first_ack: asyncio.Future[int] | None = None

    def inputs_open(self) -> None:
        """JobStarted is queued and the provider's stream is open: the job's own text goes upstream now
        (the announcement's ack and the input channel for later text come alongside, off the path)."""
        self.marks.mark(hops.INPUTS_OPEN)

    def text_sent(self, text: str) -> None:
        """``text`` was handed to the upstream; the first non-blank one ends ``upstream_send``."""
        if text.strip():
            self.marks.mark(hops.TEXT_SENT)

    def audio_published(self, ack: asyncio.Future[int]) -> None:
        """A chunk was queued for PUBLISH; the first one stamps ``first_audio`` and, at its ack, ``published``."""
        if self._first_ack is not None:
            return
        self.marks.mark(hops.FIRST_AUDIO)
        self._first_ack = ack
        ack.add_done_callback(self._acked)

    def _acked(self, fut: asyncio.Future[int]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.marks.mark(hops.PUBLISHED)

    async def timings(self) -> dict[str, float]:
        """The marks for the Final (waits briefly for the first frame's acknowledgement if it is out)."""
        ack = self._first_ack
        if ack is not None and not ack.done():
            with contextlib.suppress(Exception):
                await asyncio.wait([ack], timeout=_ACK_WAIT_S)
        return dict(self.marks.at)

    def finish(self, outcome: str, **attributes: Any) -> None:
        """The job ended: emit its span and its hop spans (spans on only)."""
        tr = tracing.tracer()
        if tr is None:
            return
        at = self.marks.at
        span = tr.start_span("tts.job", context=tracing.extract(tracing.clean_carrier(self._parent)),
                             kind=trace.SpanKind.CONSUMER, start_time=tracing.ns(at[hops.CLAIMED]),
                             attributes={"tts.outcome": outcome,
                                         **{k: v for k, v in attributes.items() if v is not None}})
        tracing.hop_spans(tr, trace.set_span_in_context(span), at, hops.WORKER_HOPS)
        span.end()
