"""The worker's side of a context's trace: the marks of one job, sent back in its Final, and its spans.

A :class:`JobTrace` is created when the job is entered (``claimed``) and stamps ``inputs_open`` (JobStarted
queued and the provider's stream open), ``text_sent`` (the first non-blank text handed to the upstream),
``first_audio`` (the upstream's first chunk in hand, queued for PUBLISH) and ``published`` (Redis
acknowledged that PUBLISH). :meth:`JobTrace.timings` is what the Final carries (shared/hops.py: mark ->
wall-clock seconds); the gateway turns it, with its own marks, into ms per hop.

With spans on (shared/tracing.py) the job is one ``tts.job`` span, a child of the trace context the
job carries (the gateway's ``tts.context`` span), with a span per worker hop (input delivery, upstream
send, upstream first audio, publish), emitted with their measured times when the job ends. The Final
waits only briefly for the first frame's PUBLISH acknowledgement (a busy worker's may come later);
the spans wait for it, up to :data:`ACK_DEADLINE_S`, so ``tts.publish`` ends at the acknowledgement, or,
when none came (PUBLISH failed, or Redis never answered), ends in error instead of going missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from shared import hops, protocol, tracing

# How long the Final waits for the first frame's PUBLISH acknowledgement it reports (the publisher is
# FIFO, so it normally came long before; a single-chunk context may still have it in flight).
_ACK_WAIT_S = 0.05
# How long the job's end waits for that acknowledgement before emitting its spans (spans on only). As
# long as the publisher's own grace for queued frames at shutdown (worker/publisher.py): an ack later
# than that is not coming, and the publish span then ends in error.
ACK_DEADLINE_S = 2.0


class JobTrace:
    """Marks and (when spans are on) spans of one job attempt."""

    __slots__ = ("_ack_deadline_s", "_first_ack", "_parent", "marks")

    def __init__(self, spec: protocol.JobSpec, ack_deadline_s: float = ACK_DEADLINE_S) -> None:
        self.marks = hops.Marks()
        self.marks.mark(hops.CLAIMED)
        self._parent = spec.trace
        self._first_ack: asyncio.Future[int] | None = None
        self._ack_deadline_s = ack_deadline_s

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
        await self._await_ack(_ACK_WAIT_S)
        return dict(self.marks.at)

    async def finish(self, outcome: str, **attributes: Any) -> None:
        """The job ended: emit its span and its hop spans (spans on only), once the first frame's
        acknowledgement is in (or the deadline for it passed)."""
        tr = tracing.tracer()
        if tr is None:
            return
        await self._await_ack(self._ack_deadline_s)
        at = self.marks.at
        span = tr.start_span("tts.job", context=tracing.extract(tracing.clean_carrier(self._parent)),
                             kind=trace.SpanKind.CONSUMER, start_time=tracing.ns(at[hops.CLAIMED]),
                             attributes={"tts.outcome": outcome,
                                         **{k: v for k, v in attributes.items() if v is not None}})
        ctx = trace.set_span_in_context(span)
        tracing.hop_spans(tr, ctx, at, hops.WORKER_HOPS)
        if hops.FIRST_AUDIO in at and hops.PUBLISHED not in at:
            self._unacked_publish_span(tr, ctx)
        span.end()

    async def _await_ack(self, timeout: float) -> None:
        ack = self._first_ack
        if ack is not None and not ack.done():
            with contextlib.suppress(Exception):
                await asyncio.wait([ack], timeout=timeout)

    def _unacked_publish_span(self, tr: trace.Tracer, ctx: tracing.Context) -> None:
        """The first frame was queued but never acknowledged: its publish span ends now, in error."""
        ack = self._first_ack
        failure = None
        if ack is not None and ack.done():
            failure = "cancelled" if ack.cancelled() else type(ack.exception()).__name__
        why = f"PUBLISH failed: {failure}" if failure else \
            f"no PUBLISH acknowledgement within {self._ack_deadline_s:g} s"
        t0 = tracing.ns(self.marks.at[hops.FIRST_AUDIO])
        span = tr.start_span(f"tts.{hops.PUBLISH}", context=ctx, start_time=t0,
                             attributes={"tts.publish_acked": False})
        span.set_status(Status(StatusCode.ERROR, why))
        span.end(end_time=max(t0, tracing.ns(self.marks.wall(time.monotonic()))))
