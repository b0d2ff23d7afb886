"""Per-context accounting: audio timing (TTFA, gaps, underruns), metrics and the one summary line.

The session calls :func:`count_audio` for every chunk it hands out and :func:`count_end` once per
context; what they record is the same whether the audio came from a worker or the phrase cache.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter

from gateway.contexts import ContextState
from gateway.events import FinalEvent
from shared import metrics
from shared.logging import get_logger

log = get_logger("gateway.session")  # the summary line keeps the logger it always had
# Per output format, its (bytes, seconds) counter children: ``.labels()`` hashes and locks on every call,
# and it ran twice per chunk. Formats are a fixed set (shared/audio/formats.py); the bound is a backstop.
_FORMAT_COUNTERS: dict[str, tuple[Counter, Counter]] = {}
_FORMAT_COUNTERS_MAX = 64


def count_audio(ctx: ContextState, audio: bytes) -> int:
    """Account one chunk about to go out; returns its per-context sequence number."""
    now = time.monotonic()
    fmt = ctx.request.fmt
    if ctx.first_audio_at is None:
        ctx.first_audio_at = now
        ctx.playback_start = now
        ctx.trace.first_audio(now)
        if ctx.ttfa_origin is not None:
            metrics.TTFA.labels(metrics.provider_label(ctx.request.provider),
                                metrics.model_label(ctx.request.model_id), fmt.name,
                                "hit" if ctx.cached else "miss").observe(now - ctx.ttfa_origin)
    else:
        gap = now - (ctx.last_audio_at or now)
        metrics.CHUNK_GAP.observe(gap)
        # Real-time playback from the first chunk on: an underrun is audio arriving after the
        # audio before it had finished playing.
        if now - ctx.playback_start > ctx.audio_seconds_played + 0.001:
            ctx.underruns += 1
            metrics.UNDERRUNS.inc()
            ctx.playback_start = now - ctx.audio_seconds_played
    ctx.last_audio_at = now
    seconds = len(audio) / fmt.bytes_per_second if fmt.bytes_per_second else 0.0
    ctx.audio_seconds_played += seconds
    seq = ctx.chunks_out
    ctx.chunks_out += 1
    ctx.audio_bytes += len(audio)
    audio_bytes, audio_seconds = _format_counters(fmt.name)
    audio_bytes.inc(len(audio))
    audio_seconds.inc(seconds)
    return seq


def _format_counters(fmt: str) -> tuple[Counter, Counter]:
    pair = _FORMAT_COUNTERS.get(fmt)
    if pair is None:
        if len(_FORMAT_COUNTERS) >= _FORMAT_COUNTERS_MAX:
            _FORMAT_COUNTERS.clear()
        pair = _FORMAT_COUNTERS[fmt] = (metrics.AUDIO_BYTES.labels(fmt), metrics.AUDIO_SECONDS.labels(fmt))
    return pair


def count_end(ctx: ContextState, outcome: str, code: str | None) -> None:
    """The context ended: its outcome metrics and its one summary log line.

    Its error, if any, is counted in ``tts_errors_total`` by the edge that reports it to the client
    (gateway/wsedge.py, the HTTP error responses), not here: counted here too, it was counted twice.
    """
    metrics.ACTIVE_CONTEXTS.dec()
    metrics.CONTEXTS.labels(outcome).inc()
    metrics.CONTEXT_DURATION.labels(metrics.provider_label(ctx.request.provider), outcome).observe(
        time.monotonic() - ctx.created_at)
    ctx.trace.finish(outcome, code, **{"tts.provider": ctx.request.provider, "tts.chunks": ctx.chunks_out})
    log.info("context_summary", session_id=ctx.session_id, context_id=ctx.context_id, job_id=ctx.job_id,
             outcome=outcome, code=code, provider=ctx.request.provider, format=ctx.request.fmt.name,
             chunks=ctx.chunks_out, audio_bytes=ctx.audio_bytes, characters=ctx.characters,
             ttfa_ms=_round(_ms(ctx.first_audio_at, ctx.ttfa_origin)), attempts=ctx.attempt + 1,
             underruns=ctx.underruns, worker_id=ctx.worker_id, cached=ctx.cached,
             timings=ctx.trace.timings(), trace_id=ctx.trace.trace_id)


def final_event(ctx: ContextState, reason: str) -> FinalEvent:
    """The context's final event, with what it produced."""
    return FinalEvent(ctx.context_id, reason, ctx.chunks_out, ctx.audio_bytes, ctx.characters,
                      _ms(ctx.first_audio_at, ctx.ttfa_origin), (time.monotonic() - ctx.created_at) * 1000,
                      ctx.cached, ctx.usage, ctx.trace, ctx.failover)


MAX_FAILOVER_ENTRIES = 16  # more than any FAILOVER_MAX_PER_CONTEXT allows (10)


def failover_entries(raw: list[Any]) -> list[dict[str, Any]]:
    """A worker's ``Final.failover`` as the client sees it: well-formed ``{at_char, reason, cause}`` only."""
    out: list[dict[str, Any]] = []
    for item in raw[:MAX_FAILOVER_ENTRIES]:
        if not isinstance(item, dict):
            continue
        at, reason, cause = item.get("at_char"), item.get("reason"), item.get("cause")
        if isinstance(at, int) and not isinstance(at, bool) and isinstance(reason, str) and isinstance(cause, str):
            entry = {"at_char": at, "reason": reason[:40], "cause": cause[:40]}
            if item.get("to") == "local":
                entry["to"] = "local"  # the local voice spoke the rest (FAILOVER_LOCAL_VOICE)
            out.append(entry)
    return out


def _ms(end: float | None, start: float | None) -> float | None:
    if end is None or start is None:
        return None
    return (end - start) * 1000


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)
