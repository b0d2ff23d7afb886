"""Per-key limits: request rate, concurrent contexts and the daily character quota.

A context reserves its characters when it starts (and more as streamed text arrives), holds a
concurrency slot while it lives, and settles when it ends: the characters actually sent to
synthesis become usage, the rest is refunded. Starts pay one Redis round trip (one script).
Streamed text of a key with a quota reserves exactly what each message brings (one script per
message): reserving ahead in blocks let one stream hold the last characters of a quota while the
key's other streams were refused for them. A key without a quota (at its context's start) counts
streamed text locally and pays no round trip. Settling runs in a background task, off the
client's path.

Slots are leases (a sorted set scored by expiry) that this gateway refreshes while the context
lives, so a crashed gateway's slots free themselves after ``CONTEXT_LEASE_S``.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import math
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.auth.principal import DEV_KEY_ID
from gateway.contexts import ContextState
from gateway.keylimits.scripts import ADMIT, RESERVE, SETTLE
from shared import keys, metrics
from shared.errors import (
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    TooManyContexts,
    Unauthorized,
)
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)
RATE_WINDOW_S = 60
USAGE_TTL_S = keys.USAGE_TTL_S  # one retention for the quota's and metering's fields of the same hash
SETTLE_ATTEMPTS = 3


@dataclass
class Lease:
    """One admitted context's reservation and concurrency slot."""

    key_id: str
    member: str
    day: str
    reserved: int  # characters reserved in Redis (refunded or turned into usage at settlement)
    limited: bool  # the key had a quota when the context started: streamed text reserves in Redis
    unreserved: int = 0  # streamed characters of an unlimited key, counted here only


class KeyLimits:
    """A key's limits on GatewayServices: ``admit`` / ``reserve_text`` / ``release``, per context."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, gateway_id: str) -> None:
        self._redis = redis
        self._gateway_id = gateway_id
        self._lease_s = settings.context_lease_s
        self._admit = redis.register_script(ADMIT)
        self._reserve = redis.register_script(RESERVE)
        self._settle = redis.register_script(SETTLE)
        self._leases: dict[tuple[str, str], Lease] = {}
        self._settling: set[asyncio.Task[None]] = set()

    @staticmethod
    def applies(tenant: str) -> bool:
        """Limits apply to real keys, not to the dev-mode caller or a session without one."""
        return bool(tenant) and tenant != DEV_KEY_ID

    async def admit(self, ctx: ContextState) -> None:
        """Check rate, concurrency and quota and reserve the start's text, atomically; raise if over.

        A context admitted here holds a slot until :meth:`release` (its owner releases it even when
        it gives up on the context straight away, e.g. because the client left meanwhile).
        """
        if not self.applies(ctx.tenant):
            return
        key_id, cid = ctx.tenant, ctx.context_id
        now = time.time()
        day = utc_day(now)
        member = f"{self._gateway_id}:{ctx.session_id}:{cid}:{uuid.uuid4().hex[:8]}"
        chars = len(ctx.request.text)
        try:
            result = await self._admit(
                keys=[keys.key_record(key_id), keys.key_usage(key_id, day), keys.key_active_contexts(key_id),
                      keys.key_rate(key_id, int(now // RATE_WINDOW_S))],
                args=[chars, member, now, now + self._lease_s, RATE_WINDOW_S * 2, USAGE_TTL_S,
                      math.ceil(self._lease_s * 2)])
        except (RedisError, OSError) as e:
            raise ServiceUnavailable("cannot check the key's limits: Redis is unreachable",
                                     context_id=cid) from e
        code, detail, *rest = result
        code = code.decode() if isinstance(code, bytes) else code
        if code != "ok":
            metrics.ADMISSION_REJECTIONS.labels(code).inc()
            log.info("context_refused", key_id=key_id, code=code, session_id=ctx.session_id, context_id=cid)
            raise _rejection(code, int(detail), now, cid)
        self._leases[(ctx.session_id, cid)] = Lease(key_id, member, day, chars, limited=int(rest[0]) >= 0)

    async def reserve_text(self, ctx: ContextState, chars: int) -> None:
        """Reserve quota for streamed text before it is sent on; raise QuotaExceeded if none is left."""
        lease = self._leases.get((ctx.session_id, ctx.context_id))
        if lease is None or chars <= 0:
            return
        if not lease.limited:
            lease.unreserved += chars
            return
        try:
            got = int(await self._reserve(keys=[keys.key_record(lease.key_id),
                                                keys.key_usage(lease.key_id, lease.day)],
                                          args=[chars, USAGE_TTL_S]))
        except (RedisError, OSError) as e:
            raise ServiceUnavailable("cannot check the key's quota: Redis is unreachable",
                                     context_id=ctx.context_id) from e
        if got < 0:
            metrics.ADMISSION_REJECTIONS.labels("quota_exceeded").inc()
            raise _rejection("quota_exceeded", -got - 1, time.time(), ctx.context_id)
        lease.reserved += got

    def release(self, ctx: ContextState, outcome: str) -> None:
        """The context ended: settle its usage and free its slot in the background."""
        lease = self._leases.pop((ctx.session_id, ctx.context_id), None)
        if lease is None:
            return
        charged = min(lease.reserved + lease.unreserved, charge(ctx, outcome))
        cached = ctx.characters if ctx.cached and outcome == "completed" else 0
        self._spawn(self._settle_lease(lease, charged, outcome, cached))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def refresh_forever(self) -> None:
        """Keep this gateway's slots alive; a gateway that dies stops refreshing and its slots expire."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            with contextlib.suppress(RedisError, OSError):
                await self.refresh_once()

    async def refresh_once(self) -> None:
        """Push every live lease's expiry forward."""
        leases = list(self._leases.values())
        if not leases:
            return
        expiry = time.time() + self._lease_s
        pipe = self._redis.pipeline(transaction=False)
        for lease in leases:
            active = keys.key_active_contexts(lease.key_id)
            pipe.zadd(active, {lease.member: expiry}, xx=True)
            pipe.expire(active, math.ceil(self._lease_s * 2))
        await pipe.execute()

    async def close(self) -> None:
        """Wait for settlements in flight (shutdown)."""
        if self._settling:
            await asyncio.wait(list(self._settling), timeout=5)

    async def _settle_lease(self, lease: Lease, charged: int, outcome: str, cached: int) -> None:
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                await self._settle(keys=[keys.key_usage(lease.key_id, lease.day),
                                         keys.key_active_contexts(lease.key_id)],
                                   args=[lease.reserved, charged, lease.member, outcome, cached])
                return
            except (RedisError, OSError) as e:
                if attempt == SETTLE_ATTEMPTS - 1:
                    # The slot still expires with its lease; the reservation stays counted for its day.
                    log.warning("settle_failed", key_id=lease.key_id, reserved=lease.reserved,
                                error=type(e).__name__)
                    return
                await asyncio.sleep(0.2 * (attempt + 1))


def charge(ctx: ContextState, outcome: str) -> int:
    """Characters a finished context costs the key.

    Completed: all its text. Cancelled: all its text if a worker had taken it up (the upstream may
    already have been paid), else nothing. Failed: nothing. A cache hit costs nothing: no upstream
    was paid (it still counted against the rate and concurrency limits).
    """
    if ctx.cached:
        return 0
    if outcome == "completed":
        return ctx.characters
    if outcome == "cancelled" and (ctx.started_at is not None or ctx.chunks_out > 0):
        return ctx.characters
    return 0


def utc_day(now: float) -> str:
    """YYYY-MM-DD of ``now`` in UTC: usage and quotas are per UTC day."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def seconds_to_next_utc_day(now: float) -> int:
    """Until the daily quota resets."""
    y, m, d = time.gmtime(now)[:3]
    return max(1, math.ceil(calendar.timegm((y, m, d, 0, 0, 0)) + 86400 - now))


def _rejection(code: str, detail: int, now: float, context_id: str) -> Exception:
    if code == "rate_limited":
        wait = max(1, math.ceil(RATE_WINDOW_S - now % RATE_WINDOW_S))
        return RateLimited("the key's request rate limit is reached", context_id=context_id,
                           retry_after_s=wait)
    if code == "too_many_contexts":
        return TooManyContexts(f"the key already runs {detail} concurrent contexts (its limit)",
                               context_id=context_id, scope="key", retry_after_s=1)
    if code == "quota_exceeded":
        return QuotaExceeded("the key's daily character quota is used up", context_id=context_id,
                             remaining_chars=max(0, detail), retry_after_s=seconds_to_next_utc_day(now))
    return Unauthorized("the API key was revoked", context_id=context_id)
