"""Where a context spends its time: the hop names and the per-context breakdown (marks -> ms per hop).

A context's first audio travels one path. Each process stamps *marks* along it; a *hop* is the time
between two consecutive marks, so the hops of a context add up to the gateway-observed time to first
audio (``received`` -> ``client_sent``)::

    mark            where     hop that ends at it
    received        gateway   -                     the client's start reached the session
    admitted        gateway   admission             key limits, quota, phrase-cache lookup
    enqueue_start   gateway   retry                 only after a retry: time lost to failed attempts
    enqueued        gateway   enqueue               the enqueue MULTI (job key, queue entry, wake) acked *
    claimed         worker    claim (wall)          a worker woke, claimed the job and entered it
    inputs_open     worker    input_delivery        JobStarted queued, the provider's stream open (the
                                                    announcement's ack is awaited beside the upstream)
    text_sent       worker    upstream_send         upstream socket/permit acquired and first text sent
                                                    (includes waiting for the client's first text)
    first_audio     worker    upstream_first_audio  the upstream's first chunk in the worker's hand
    published       worker    publish               Redis acknowledged that chunk's PUBLISH *
    gw_received     gateway   gateway_receive (wall) the session routed the chunk off its channel
    client_sent     gateway   client_send           the chunk's frame handed to the client's socket

(*) A mark that ends an in-process hop right before a cross-process one counts as no later than the
mark after it: the worker may claim the job before the gateway reads its enqueue reply (the wake
PUBLISH rides in that MULTI), and the gateway usually holds the frame before the worker reads
Redis' acknowledgement of its PUBLISH. ``enqueue`` therefore ends when the reply came or a worker
claimed the job, whichever was first, and ``publish`` when the acknowledgement came or the gateway
had the frame; only the part on the path is counted, and the hops add up without overlap.

Clocks: a mark is wall-clock seconds since the epoch, but each process takes it as ``time.monotonic()``
plus one offset sampled when the context's trace was created, so two marks from the same process
differ by an exact monotonic duration. The two hops that cross processes (``claim``: gateway enqueued
-> worker claimed; ``gateway_receive``: worker published -> gateway received) compare the two
processes' wall clocks; on one host they agree to microseconds, across hosts they carry the hosts'
clock skew. A hop is never negative: one whose end precedes its start (skew, or the gateway reading a
frame before the worker saw its PUBLISH acknowledged) counts as 0.

Bounded by construction: only the names in :data:`MARKS` are stored (11 floats per context), and
marks that come off the wire are checked (known name, finite number) before use. Plain dicts of
floats, so they travel as msgpack in the worker's Final.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

# Marks, in path order.
RECEIVED = "received"
ADMITTED = "admitted"
ENQUEUE_START = "enqueue_start"
ENQUEUED = "enqueued"
CLAIMED = "claimed"
INPUTS_OPEN = "inputs_open"
TEXT_SENT = "text_sent"
FIRST_AUDIO = "first_audio"
PUBLISHED = "published"
GW_RECEIVED = "gw_received"
CLIENT_SENT = "client_sent"
MARKS = (RECEIVED, ADMITTED, ENQUEUE_START, ENQUEUED, CLAIMED, INPUTS_OPEN, TEXT_SENT, FIRST_AUDIO,
         PUBLISHED, GW_RECEIVED, CLIENT_SENT)
WORKER_MARKS = frozenset((CLAIMED, INPUTS_OPEN, TEXT_SENT, FIRST_AUDIO, PUBLISHED))

# Hops, in path order: name -> (start mark, end mark).
ADMISSION = "admission"
RETRY = "retry"
ENQUEUE = "enqueue"
CLAIM = "claim"
INPUT_DELIVERY = "input_delivery"
UPSTREAM_SEND = "upstream_send"
UPSTREAM_FIRST_AUDIO = "upstream_first_audio"
PUBLISH = "publish"
GATEWAY_RECEIVE = "gateway_receive"
CLIENT_SEND = "client_send"
HOPS: dict[str, tuple[str, str]] = {
    ADMISSION: (RECEIVED, ADMITTED),
    RETRY: (ADMITTED, ENQUEUE_START),
    ENQUEUE: (ENQUEUE_START, ENQUEUED),
    CLAIM: (ENQUEUED, CLAIMED),
    INPUT_DELIVERY: (CLAIMED, INPUTS_OPEN),
    UPSTREAM_SEND: (INPUTS_OPEN, TEXT_SENT),
    UPSTREAM_FIRST_AUDIO: (TEXT_SENT, FIRST_AUDIO),
    PUBLISH: (FIRST_AUDIO, PUBLISHED),
    GATEWAY_RECEIVE: (PUBLISHED, GW_RECEIVED),
    CLIENT_SEND: (GW_RECEIVED, CLIENT_SENT),
}
# Hops whose two marks come from different processes (wall clocks compared).
CROSS_PROCESS = frozenset((CLAIM, GATEWAY_RECEIVE))
# Hops the gateway measures (its spans); the rest are the worker's.
GATEWAY_HOPS = (ADMISSION, RETRY, ENQUEUE, CLAIM, GATEWAY_RECEIVE, CLIENT_SEND)
WORKER_HOPS = (INPUT_DELIVERY, UPSTREAM_SEND, UPSTREAM_FIRST_AUDIO, PUBLISH)


class Marks:
    """One process's marks for one context: ``mark(name)`` once per name, later calls keep the first."""

    __slots__ = ("at", "offset")

    def __init__(self) -> None:
        # wall = monotonic + offset, sampled once: same-process differences stay exact.
        self.offset = time.time() - time.monotonic()
        self.at: dict[str, float] = {}

    def wall(self, mono: float) -> float:
        """A monotonic reading of this process as wall-clock seconds."""
        return mono + self.offset

    def mark(self, name: str, mono: float | None = None) -> None:
        """Stamp ``name`` now (or at the monotonic reading ``mono``) unless it is already stamped."""
        if name not in self.at:
            self.at[name] = (time.monotonic() if mono is None else mono) + self.offset

    def restamp(self, name: str, mono: float | None = None) -> None:
        """Stamp ``name`` now (or at ``mono``) even if it was stamped before (a retry enqueues again)."""
        self.at[name] = (time.monotonic() if mono is None else mono) + self.offset

    def merge(self, other: Any, allowed: frozenset[str] = WORKER_MARKS) -> None:
        """Take the marks another process sent (the worker's Final); anything malformed is skipped."""
        if not isinstance(other, dict):
            return
        for name, value in other.items():
            if name in allowed and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self.at[name] = float(value)


# (mark, the mark after it across a process boundary): the first counts as no later than the second.
_CAPPED = ((ENQUEUED, CLAIMED), (PUBLISHED, GW_RECEIVED))


def on_path(at: dict[str, float]) -> dict[str, float]:
    """The marks as the path saw them: ``enqueued``/``published`` no later than the mark after them (*)."""
    out = dict(at)
    if PUBLISHED not in out and FIRST_AUDIO in out and GW_RECEIVED in out:
        # The worker's Final left before Redis' acknowledgement of the first frame reached it (a busy
        # worker): the gateway holding the frame ends ``publish`` as well, as (*) says.
        out[PUBLISHED] = out[GW_RECEIVED]
    for early, late in _CAPPED:
        if early in out and late in out and out[early] > out[late]:
            out[early] = out[late]
    return out


def hop_bounds(at: dict[str, float], names: Iterable[str] = HOPS) -> Iterator[tuple[str, float, float]]:
    """(hop, start, end) on the path (:func:`on_path`) for each of ``names`` that exists: its two
    marks are there and, for ``retry``, a retry happened. The one rule for the breakdown and the spans."""
    at = on_path(at)
    for hop in names:
        start, end = HOPS[hop]
        if start not in at or end not in at:
            continue
        if hop == RETRY and at[end] <= at[start]:
            continue  # first attempt: admitted and enqueue_start are one instant, no retry hop
        yield hop, at[start], at[end]


def breakdown(at: dict[str, float]) -> dict[str, float]:
    """Milliseconds per hop (path order), for every hop that exists (:func:`hop_bounds`); never negative."""
    return {hop: round(max(0.0, end - start) * 1000, 3) for hop, start, end in hop_bounds(at)}
