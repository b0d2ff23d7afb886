"""Account-wide upstream concurrency: permits shared by every worker through Redis.

A provider (ElevenLabs here) caps an account's concurrent generations (the plan's limit,
``UPSTREAM_CONCURRENCY``). With N workers the cap must hold for all of them together, so the pool's
per-process count is not enough: every context also takes one of these permits before it is placed, keeps it across
transparent retries, and gives it back at its final, its failure or its socket's end.

Leases: ``upstream_leases`` is a sorted set of holders (``<instance>:<context key>``) scored by
lease expiry on Redis' clock (no worker's clock is trusted). A provider refreshes its leases every
``lease_s / 3``, so a SIGKILLed worker's permits lapse within ``lease_s`` and the next script call
anywhere purges them. A refresh re-adds leases Redis lost (a restart without persistence, a permit
granted while Redis was unreachable), so the count converges back to the truth.

Fairness: a caller that cannot take a permit at once joins a line of tickets numbered in arrival
order. Who gets the free permits is decided in one place (``plan`` in the scripts), in two passes
over the line: first, in arrival order, tickets of tenants holding less than their fair share
``max(1, floor(limit / tenants))`` (tenants = client keys holding or waiting for a permit); then,
only if permits are left, the rest in arrival order (every waiting tenant has its share by then, so
nobody waits for a tenant over its share). With no ticket in line any free permit is the caller's
(one call, no scan). A newcomer on any worker never overtakes an earlier waiter of a tenant under
its share. A ticket expires like a lease when its waiter stops polling (a crashed worker's waiters
leave the line). The tenant travels in the holder name (``<instance>:<tenant digest>:<context>``),
a digest of the job's key id, so a script sees it without another key.

Wake-up: whoever frees permits (a release, or a purge of lapsed leases) pushes the tickets now
entitled to them onto their owner's wake list, and one ``BLPOP`` loop per provider instance (only
while it has waiters) hands each to its waiter, which claims with one script call. A targeted wake:
no herd of every waiter re-polling on every release (a broadcast), no permit lying idle until the
next poll (polling); it also needs no pub/sub connection beside the process's one. A waiter still
re-polls at the earliest lease expiry and at least every ``lease_s / 3``, so a lost wake (or a
crashed holder nobody releases for) costs time, never a permit.

Cost: taking a free permit is one EVALSHA (the scripts are loaded at start); releases are batched
off the caller's path.

Credit: while the account has permits to spare a permit is taken before Redis answers
(:mod:`.credit`). Redis unreachable: permits fail open to the per-worker limit (:mod:`.unreachable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import keys
from shared.errors import UpstreamBusy, UpstreamError
from shared.logging import get_logger
from shared.metrics import UPSTREAM_ACCOUNT_LEASES

from .credit import CreditMixin
from .scripts import ACQUIRE, REFRESH, RELEASE
from .unreachable import OutageGuard, Unreachable

log = get_logger(__name__)

_WAKE_BLOCK_S = 1  # BLPOP timeout of the wake loop (whole seconds: Redis 6.2 and 7 agree on those)
_HOLD_WEIGHT = 0.2  # of the newest permit hold in the moving average


def tenant_tag(tenant: str) -> str:
    """The tenant part of a holder name: a digest of the client key id (opaque, never has a ``:``)."""
    return hashlib.sha256(tenant.encode()).hexdigest()[:12]


def account_id(provider: str, base_url: str, api_key: str | None) -> str:
    """Name an upstream account in Redis keys without revealing its key (a digest of URL and key)."""
    digest = hashlib.sha256(f"{base_url}\0{api_key or ''}".encode()).hexdigest()[:16]
    return f"{provider}:{digest}"


class AccountLimit(CreditMixin):
    """One provider instance's side of the account-wide permits (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, *, account: str, limit: int, lease_s: float,
                 provider: str = "elevenlabs", credit: bool = True) -> None:
        """``limit`` permits for ``account`` in ``redis``, leased for ``lease_s`` at a time; ``credit``:
        take a permit before Redis answers while the account has some to spare (module docstring)."""
        self.limit = limit
        self.lease_s = lease_s
        self.provider = provider
        self.instance = uuid.uuid4().hex[:12]
        self.refresh_s = lease_s / 3
        self.account_leases = 0  # held account-wide, as last seen
        self._init_credit(credit)
        self._redis = redis
        self._ttl_ms = max(1, round(lease_s * 1000))
        self._keys = [keys.upstream_leases(account), keys.upstream_waiters(account),
                      keys.upstream_waiter_deadlines(account)]
        self._seq_key = keys.upstream_ticket_seq(account)
        self._wake_key = keys.upstream_wake(account, self.instance)
        self._wake_prefix = keys.upstream_wake(account, "")
        self._acquire = redis.register_script(ACQUIRE)
        self._release = redis.register_script(RELEASE)
        self._refresh = redis.register_script(REFRESH)
        self._held: set[str] = set()
        self._holders: dict[str, str] = {}  # context key -> holder, while it waits for or holds a permit
        self._granted_at: dict[str, float] = {}  # holder -> when its permit was granted (held ones only)
        self.hold_s: float | None = None  # moving average of how long this instance's contexts hold one
        self._waiting: dict[str, asyncio.Event] = {}
        self._leaving: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._waker: asyncio.Task[None] | None = None
        self._guard = OutageGuard(provider)
        self._closed = False
        # Called whenever :attr:`saturated` may have changed (the owner's gauge): the account's view changes
        # in the background (a release's reply, a refresh), after the owner's own events.
        self.on_change: Callable[[], None] | None = None

    def holder(self, key: str, tenant: str = "") -> str:
        """The member naming context ``key`` (of client key ``tenant``) of this instance in Redis."""
        known = self._holders.get(key)
        return known if known is not None else f"{self.instance}:{tenant_tag(tenant)}:{key}"

    # -- life cycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the scripts (so the first acquire is one round trip too) and start refreshing leases."""
        try:
            async with asyncio.timeout(2.0):
                for script in (ACQUIRE, RELEASE, REFRESH):
                    await self._redis.script_load(script)
        except (RedisError, OSError, TimeoutError) as e:
            log.warning("upstream_permits_unavailable", error=type(e).__name__, at="start")
        self._refresher = asyncio.create_task(self._refresh_forever(), name=f"{self.provider}-permit-refresh")

    async def close(self) -> None:
        """Wake and fail waiters, stop refreshing and give back every permit still held."""
        if self._closed:
            return
        self._closed = True
        for ev in self._waiting.values():
            ev.set()
        for task in (self._refresher, self._waker, *self._confirming):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._flusher is not None:
            await asyncio.wait([self._flusher])
        self._leaving |= self._held
        self._held.clear()
        if not self._guard.down():  # else they lapse by themselves: do not hang shutdown
            await self._flush()

    # -- permits ------------------------------------------------------------------------------------------
    async def acquire(self, key: str, deadline: float, tenant: str = "") -> None:
        """Take a permit for context ``key`` of client key ``tenant``, in line until ``deadline``
        (monotonic) and within the tenant's fair share; else raise UpstreamBusy."""
        if self._closed:
            raise UpstreamError(f"the {self.provider} provider is not running")
        holder = self.holder(key, tenant)
        self._holders[key] = holder
        if self._guard.down():
            self._fail_open(holder)
            return
        if self.credit_open():
            self._take_on_credit(holder)
            return
        t0 = time.monotonic()
        ev = asyncio.Event()
        self._waiting[holder] = ev  # before the first call: a wake may come before its reply is read
        self._changed()
        ahead = 0
        hopeless: float | None = None  # the expected wait when refused at once
        first = True
        try:
            while True:
                may_wait = deadline - time.monotonic() > 0
                try:
                    granted, held, ahead, next_ms = await self._acquire_call(holder, may_wait)
                except Unreachable:
                    self._fail_open(holder)
                    return
                self._seen(held)
                if granted:
                    self._held.add(holder)
                    self._granted_at[holder] = time.monotonic()
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                expected = self.expected_wait(int(ahead)) if first else None
                first = False
                if expected is not None and expected > remaining:
                    hopeless = expected  # it could not end in time: say so now, not after the whole wait
                    break
                self._ensure_waker()
                sleep = min(remaining, self.refresh_s)
                if next_ms >= 0:
                    sleep = min(sleep, next_ms / 1000 + 0.005)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sleep):
                        await ev.wait()
                ev.clear()
                if self._closed:
                    raise UpstreamError(f"the {self.provider} provider shut down")
        except BaseException:
            self._holders.pop(key, None)
            self._leave(holder)  # cancelled mid-call, a grant may have raced: give back ticket and permit
            raise
        finally:
            self._waiting.pop(holder, None)
            self._changed()
        self._holders.pop(key, None)
        self._leave(holder)
        waited = time.monotonic() - t0
        if hopeless is not None:
            raise UpstreamBusy(f"the upstream account's {self.limit} concurrent generations are busy and "
                               f"{int(ahead)} contexts wait ahead (about {hopeless:.1f}s): refused at once",
                               limit="concurrency", scope="account", refused="at_once", waited_s=round(waited, 3),
                               expected_wait_s=round(hopeless, 3), account_limit=self.limit,
                               waiting_ahead=int(ahead))
        raise UpstreamBusy(f"the upstream account's {self.limit} concurrent generations stayed busy "
                           f"for {waited:.1f}s", limit="concurrency", scope="account",
                           waited_s=round(waited, 3), account_limit=self.limit, waiting_ahead=int(ahead))

    def release(self, key: str) -> None:
        """Give back context ``key``'s permit (idempotent; sent in the background, batched)."""
        holder = self._holders.pop(key, None)
        if holder is not None and holder in self._held:
            self._held.discard(holder)
            granted = self._granted_at.pop(holder, None)
            if granted is not None:
                held_s = time.monotonic() - granted
                self.hold_s = held_s if self.hold_s is None else \
                    (1 - _HOLD_WEIGHT) * self.hold_s + _HOLD_WEIGHT * held_s
            self._leave(holder)

    def expected_wait(self, ahead: int) -> float | None:
        """Seconds until a caller with ``ahead`` tickets before it gets a permit, if the account's
        permits come back at the pace this instance's contexts give theirs back (None: no pace seen yet).

        ``limit`` holders each done after ``hold_s`` on average free about ``limit / hold_s`` permits a
        second. Fair shares may reorder the line a little; this is an estimate, used only to refuse a
        wait that could not end within the caller's deadline anyway (so it hears so at once)."""
        if self.hold_s is None:
            return None
        return (ahead + 1) * self.hold_s / self.limit

    @property
    def saturated(self) -> bool:
        """Every account permit is taken (as last seen), or contexts here wait for one."""
        return self.account_leases >= self.limit or bool(self._waiting)

    def held(self, key: str) -> bool:
        """Does context ``key`` hold a permit here?"""
        holder = self._holders.get(key)
        return holder is not None and holder in self._held

    def status(self) -> dict[str, Any]:
        """For /admin/status and the heartbeat: the limit, permits held here and account-wide, waiters."""
        return {"scope": "account", "limit": self.limit, "held_here": len(self._held),
                "waiting_here": len(self._waiting), "account_leases": self.account_leases,
                "saturated": self.saturated, "hold_s": None if self.hold_s is None else round(self.hold_s, 3),
                "redis": "unreachable" if self._guard.ongoing else "ok"}

    # -- Redis --------------------------------------------------------------------------------------------
    async def _acquire_call(self, holder: str, may_wait: bool) -> Any:
        """One ACQUIRE: [granted, account leases, tickets ahead, ms to the earliest expiry or -1]."""
        return await self._guard.call(self._acquire, [*self._keys, self._seq_key],
                                      [self.limit, self._ttl_ms, self._wake_prefix, holder, int(may_wait)])

    def _fail_open(self, holder: str) -> None:
        self._guard.count_fail_open()
        self._held.add(holder)  # registered in Redis by the next refresh that gets through

    def _seen(self, held: int) -> None:
        self.account_leases = int(held)
        self._seen_at = time.monotonic()
        UPSTREAM_ACCOUNT_LEASES.labels(self.provider).set(self.account_leases)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _leave(self, holder: str) -> None:
        self._leaving.add(holder)
        if not self._closed and (self._flusher is None or self._flusher.done()):
            # One task drains every release made in the meantime with one script call.
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name=f"{self.provider}-permit-release", context=contextvars.Context())

    async def _flush(self) -> None:
        while self._leaving:
            batch = list(self._leaving)
            self._leaving.clear()
            try:
                held = await self._guard.call(self._release, self._keys,
                                        [self.limit, self._ttl_ms, self._wake_prefix, *batch])
            except Unreachable:
                return  # the leases (and tickets) lapse by themselves within lease_s
            self._seen(held)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            if not self._held:
                continue
            batch = list(self._held)
            try:
                held, added = await self._guard.call(self._refresh, self._keys,
                                               [self.limit, self._ttl_ms, self._wake_prefix, *batch])
            except Unreachable:
                continue
            self._seen(held)
            if added:
                log.warning("upstream_permits_reregistered", count=int(added), account_leases=int(held))
            # Released while the refresh was in flight: the refresh may have re-added them.
            stale = [h for h in batch if h not in self._held]
            for h in stale:
                self._leave(h)

    def _ensure_waker(self) -> None:
        if not self._closed and (self._waker is None or self._waker.done()):
            self._waker = asyncio.get_running_loop().create_task(
                self._wake_loop(), name=f"{self.provider}-permit-wake", context=contextvars.Context())

    async def _wake_loop(self) -> None:
        backoff = 0.05
        while self._waiting and not self._closed:
            try:
                item = await self._redis.blpop([self._wake_key], timeout=_WAKE_BLOCK_S)  # type: ignore[misc]
            except (RedisError, OSError):
                await asyncio.sleep(backoff)  # waiters keep polling meanwhile
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            if item is not None:
                ev = self._waiting.get(item[1].decode() if isinstance(item[1], bytes) else item[1])
                if ev is not None:
                    ev.set()

