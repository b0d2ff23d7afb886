"""Usage metering: what each ended context cost, on its final, in Redis per key per day, and in Prometheus.

What is counted (docs/operations.md#usage-metering has the operator's view):

- ``billed_chars``: characters sent to a paid upstream (ElevenLabs). A completed context reports what
  its worker handed the provider (``protocol.Final.billed_chars``: 0 for the local voice). A context
  the client cancelled after a worker took it counts all its text for a paying provider (the upstream
  may have been paid; the same rule the quota charges by), one cancelled before that counts 0. A
  failed context counts 0: its worker reported nothing, and the quota charges nothing for it either.
- ``synthesized_chars``: characters freshly synthesized by any provider, the local voice included
  (local = synthesized - billed).
- ``cached_chars``: characters answered from the phrase cache; these bill 0 upstream.
- ``audio_seconds``: duration of the audio delivered to the client (bytes / the format's byte rate).

Redis: the counters go into the key's existing per-day usage hash (``keys.key_usage``, shared with
the quota's ``used``/``reserved``), the day's all-keys total, and the day's sorted set of active
keys. Increments are coalesced per (key, day) and written by one background task in one pipeline,
so a burst of endings costs one round trip, and the client's final never waits on Redis. The task
lingers ``FLUSH_LINGER_S`` after the first ending before it writes: one pipeline of about a dozen
commands per key and day then carries every context that ended meanwhile, instead of one pipeline
per context (11 of the ~75 Redis commands of a whole utterance were its usage write).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.contexts import ContextState, ContextUsage
from shared import keys, metrics
from shared.logging import get_logger

log = get_logger(__name__)
# Providers that pay nobody; the worker says so too (``bills_upstream``), this covers cancelled contexts
# whose worker never reported.
UNBILLED_PROVIDERS = frozenset({"local"})
COUNTERS = ("billed_chars", "synthesized_chars", "cached_chars", "audio_ms")
# (key, day) pairs waiting to be written; keys are operator-created, so this is only reached when Redis has
# been away for long: then the oldest increments are dropped (and counted) rather than memory grown.
MAX_PENDING = 10_000
WRITE_ATTEMPTS = 3
RETRY_EVERY_S = 1.0
# How long usage waits for more endings before it is written: the lag a usage reader may see, never
# the client's (its final went out already).
FLUSH_LINGER_S = 0.25


def usage_of(ctx: ContextState, outcome: str) -> ContextUsage:
    """The usage of a context that ended with ``outcome`` (completed, cancelled, failed)."""
    audio = ctx.audio_seconds_played
    if ctx.cached:
        return ContextUsage(cached_chars=ctx.characters, audio_seconds=audio)
    pays = ctx.request.provider not in UNBILLED_PROVIDERS
    if outcome == "completed":
        reported = ctx.billed_chars
        billed = reported if reported is not None else (ctx.characters if pays else 0)
        return ContextUsage(billed, ctx.characters, 0, audio)
    if outcome == "cancelled" and (ctx.started_at is not None or ctx.chunks_out > 0):
        return ContextUsage(ctx.characters if pays else 0, ctx.characters, 0, audio)
    return ContextUsage(audio_seconds=audio)


def utc_day(now: float) -> str:
    """The UTC day of ``now`` as YYYY-MM-DD (the same day key as the quota's)."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def meter_context(writer: UsageWriter, ctx: ContextState, outcome: str) -> ContextUsage:
    """Count an ended context: Prometheus now, Redis in the background; returns it for the final."""
    usage = usage_of(ctx, outcome)
    labels = (metrics.provider_label(ctx.request.provider), metrics.model_label(ctx.request.model_id))
    metrics.USAGE_BILLED_CHARS.labels(*labels).inc(usage.billed_chars)
    metrics.USAGE_SYNTHESIZED_CHARS.labels(*labels).inc(usage.synthesized_chars)
    metrics.USAGE_CACHED_CHARS.labels(*labels).inc(usage.cached_chars)
    metrics.USAGE_AUDIO_SECONDS.labels(*labels).inc(usage.audio_seconds)
    if ctx.tenant:
        writer.add(ctx.tenant, utc_day(time.time()), usage.counters())
    return usage


class UsageWriter:
    """Coalesces usage increments per (key, day) and writes them to Redis from one background task."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pending: dict[tuple[str, str], dict[str, int]] = {}
        self._wake = asyncio.Event()

    def add(self, key_id: str, day: str, counts: dict[str, int]) -> None:
        """Queue one context's increments (merged with others of the same key and day)."""
        slot = self._pending.get((key_id, day))
        if slot is None:
            if len(self._pending) >= MAX_PENDING:
                self._drop(self._pending.pop(next(iter(self._pending))))
            slot = self._pending[(key_id, day)] = dict.fromkeys(COUNTERS, 0)
            slot["contexts"] = 0
        for name, value in counts.items():
            slot[name] += value
        slot["contexts"] += 1
        self._wake.set()

    async def run_forever(self) -> None:
        """Write what is pending ``FLUSH_LINGER_S`` after the first of it came; retry failed batches every second."""
        while True:
            if self._pending:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RETRY_EVERY_S)
            else:
                await self._wake.wait()
                await asyncio.sleep(FLUSH_LINGER_S)  # let the endings around this one join its write
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write the pending batch; on failure it goes back to pending (merged). True when written."""
        if not self._pending:
            return True
        batch, self._pending = self._pending, {}
        for attempt in range(WRITE_ATTEMPTS):
            try:
                await self._write(batch)
                return True
            except (RedisError, OSError) as e:
                if attempt == WRITE_ATTEMPTS - 1:
                    log.warning("usage_write_failed", pairs=len(batch), error=type(e).__name__)
                    break
                await asyncio.sleep(0.1 * (attempt + 1))
        for (key_id, day), counts in batch.items():  # keep it for the next round
            contexts = counts.pop("contexts")
            self.add(key_id, day, counts)
            self._pending[(key_id, day)]["contexts"] += contexts - 1
        self._wake.clear()  # the merge-back is no news: retry on the timer, not in a tight loop
        return False

    async def _write(self, batch: dict[tuple[str, str], dict[str, int]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for (key_id, day), counts in batch.items():
            per_key, total = keys.key_usage(key_id, day), keys.usage_day_total(day)
            for name in COUNTERS:
                if counts[name]:
                    pipe.hincrby(per_key, name, counts[name])
                    pipe.hincrby(total, name, counts[name])
            # The key's own ``contexts`` is the quota's (counted at admission); the day's total counts here.
            pipe.hincrby(total, "contexts", counts["contexts"])
            pipe.zincrby(keys.usage_day_keys(day), counts["synthesized_chars"] + counts["cached_chars"], key_id)
            for name in (per_key, total, keys.usage_day_keys(day)):
                pipe.expire(name, keys.USAGE_TTL_S)
        await pipe.execute()

    def _drop(self, counts: dict[str, int]) -> None:
        metrics.USAGE_WRITE_FAILURES.inc()
        log.warning("usage_dropped", contexts=counts.get("contexts", 0))

    async def close(self) -> None:
        """Last flush at shutdown (bounded: a dead Redis must not hold the exit)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), 5.0)
        if self._pending:
            for counts in self._pending.values():
                self._drop(counts)
            self._pending.clear()
