"""Account permits on credit: taken before Redis answers while the account has some to spare.

While the account as last seen (a reply at most 0.25 s old) has more than ``credit_margin`` permits
to spare (a tenth of the limit, at least 2) and nobody here waits, a permit is taken at once and its
EVALSHA is answered in the background: one Redis round trip less before the context's text goes
upstream. Nobody is overtaken: a line forms only where the account is full, and then no view shows a
spare. The view may miss what other workers took since; should Redis refuse the confirmation (they
took the whole margin within the view's age), the permit is kept *overdrawn*, registered by the next
refresh like a fail-open one, counted (``tts_upstream_permit_credit_total{outcome="overdrawn"}``) and
logged. An upstream that then refuses the extra generation ("too many concurrent requests") is
retried with a backoff, so an overdraft costs a retry, never a failure; ``UPSTREAM_PERMIT_CREDIT=false``
makes every permit wait for Redis.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from shared.logging import get_logger
from shared.metrics import UPSTREAM_PERMIT_CREDIT

from .unreachable import OutageGuard, Unreachable

log = get_logger(__name__)

# Credit needs a view of the account at most this old (any script's reply refreshes it; a busy worker
# gets several a second) and this share of the limit (at least 2) still spare in it: the overdraft
# risk is other workers taking all of that margin within the view's age.
_CREDIT_VIEW_S = 0.25
_CREDIT_MARGIN_SHARE = 0.1


class CreditMixin:
    """The credit side of :class:`~.account.AccountLimit` (see the module docstring)."""

    # The account's state and calls this side uses; AccountLimit defines them.
    limit: int
    provider: str
    account_leases: int
    _closed: bool
    _guard: OutageGuard
    _held: set[str]
    _granted_at: dict[str, float]
    _waiting: dict[str, asyncio.Event]
    holder: Callable[[str, str], str]
    _holders: dict[str, str]
    _acquire_call: Callable[[str, bool], Awaitable[Any]]
    _seen: Callable[[int], None]
    _leave: Callable[[str], None]

    def _init_credit(self, enabled: bool) -> None:
        self.credit = enabled
        self.credit_margin = max(2, math.ceil(self.limit * _CREDIT_MARGIN_SHARE))
        self._seen_at = -float("inf")  # when (monotonic) account_leases was last read from Redis
        self._on_credit = 0  # permits taken on credit whose confirmation has not come back yet
        self._confirming: set[asyncio.Task[None]] = set()
        for outcome in ("confirmed", "overdrawn"):  # both series from the start: a rate() sees the first one
            UPSTREAM_PERMIT_CREDIT.labels(self.provider, outcome)

    def credit_open(self) -> bool:
        """May a permit be taken before Redis answers (see the module docstring)?"""
        return (self.credit and not self._closed and not self._guard.down() and not self._waiting
                and time.monotonic() - self._seen_at <= _CREDIT_VIEW_S
                and self.account_leases + self._on_credit + self.credit_margin < self.limit)

    def take_on_credit(self, key: str, tenant: str = "") -> None:
        """:meth:`acquire` without a wait, for a caller that just saw :meth:`credit_open` true."""
        holder = self.holder(key, tenant)
        self._holders[key] = holder
        self._take_on_credit(holder)

    def _take_on_credit(self, holder: str) -> None:
        self._held.add(holder)
        self._granted_at[holder] = time.monotonic()
        self._on_credit += 1
        task = asyncio.get_running_loop().create_task(self._confirm(holder), name=f"{self.provider}-permit-confirm",
                                                      context=contextvars.Context())
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm(self, holder: str) -> None:
        """The ACQUIRE of a permit taken on credit (never joins the line: the permit is already in use)."""
        try:
            granted, held, _, _ = await self._acquire_call(holder, False)
        except Unreachable:
            return  # kept, like a fail-open permit: the next refresh that gets through registers it
        finally:
            self._on_credit -= 1
        self._seen(held)
        if holder not in self._held:
            self._leave(holder)  # released while the call was out, which may have added its lease after
            return
        if granted:
            UPSTREAM_PERMIT_CREDIT.labels(self.provider, "confirmed").inc()
        else:
            UPSTREAM_PERMIT_CREDIT.labels(self.provider, "overdrawn").inc()
            log.warning("upstream_permit_overdrawn", account_leases=int(held), limit=self.limit)
