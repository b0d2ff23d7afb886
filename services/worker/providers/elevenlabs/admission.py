"""Who goes next: a FIFO of contexts waiting for a socket slot, under the account's concurrency limit.

ElevenLabs plans cap concurrent generations; every live context holds one permit from placement
until its final (or its socket's end), except while it idles dormant on its socket (:mod:`.lazy`). First-time requests queue in arrival order; contexts moved
off a failed socket go ahead of them (they already hold a permit and were promised audio).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .context import UpstreamContext
from .messages import Failure

S = TypeVar("S")


@dataclass(eq=False)
class Waiter:
    """One context waiting for placement."""

    ctx: UpstreamContext
    fut: asyncio.Future[None] | None  # None for a retry: nobody awaits its placement
    needs_permit: bool
    since: float
    failure: Failure | None = None  # a retry's original failure, reported if the wait runs out
    timer: asyncio.TimerHandle | None = None
    resume: bool = False  # a dormant context already on a socket: it needs a permit, not a slot


class Admission:
    """The waiting line and the permit count."""

    def __init__(self, limit: int) -> None:
        """Allow ``limit`` live contexts at once."""
        self.limit = limit
        self.live = 0
        self._waiters: deque[Waiter] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def __contains__(self, w: Waiter) -> bool:
        return w in self._waiters

    @property
    def exhausted(self) -> bool:
        """True when every permit is taken."""
        return self.live >= self.limit

    def append(self, w: Waiter) -> None:
        """A first-time request joins the end of the line."""
        self._waiters.append(w)

    def insert_retry(self, w: Waiter) -> None:
        """A moved context goes behind earlier moved ones, ahead of every first-time request."""
        index = next((i for i, x in enumerate(self._waiters) if x.failure is None), len(self._waiters))
        self._waiters.insert(index, w)

    def remove(self, w: Waiter) -> bool:
        """Take ``w`` out of the line (and stop its expiry timer); False if it was not waiting."""
        if w not in self._waiters:
            return False
        self._waiters.remove(w)
        if w.timer is not None:
            w.timer.cancel()
        return True

    def find(self, ctx: UpstreamContext) -> Waiter | None:
        """The waiter holding ``ctx``, if it waits."""
        return next((w for w in self._waiters if w.ctx is ctx), None)

    def drain(self) -> list[Waiter]:
        """Empty the line (shutdown)."""
        out = list(self._waiters)
        for w in out:
            self.remove(w)
        return out

    def serve(self, find: Callable[[UpstreamContext], S | None], place: Callable[[S, UpstreamContext], None]) -> None:
        """Place waiters in order while permits last; one blocked only by its own key lets later ones pass."""
        for w in list(self._waiters):
            if w.fut is not None and w.fut.done():
                self.remove(w)  # its caller gave up
                continue
            if w.needs_permit and self.exhausted:
                break
            if w.resume:
                self.remove(w)
                self.live += 1
                w.ctx.holds_permit = True
                if w.fut is not None:
                    w.fut.set_result(None)
                continue
            slot = find(w.ctx)
            if slot is None:
                continue
            self.remove(w)
            if w.needs_permit:
                self.live += 1
                w.ctx.holds_permit = True
            place(slot, w.ctx)
            if w.fut is not None:
                w.fut.set_result(None)

    def release(self, ctx: UpstreamContext) -> None:
        """Return ``ctx``'s permit (idempotent)."""
        if ctx.holds_permit:
            ctx.holds_permit = False
            self.live -= 1
