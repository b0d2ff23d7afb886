"""Who goes next: a FIFO of contexts waiting for a socket slot, under the account's concurrency limit.

ElevenLabs plans cap concurrent generations; every live context holds one permit from placement
until its final (or its socket's end, or its giving up on a socket still dialling), except while it
idles dormant on its socket (:mod:`.lazy`). First-time requests queue in arrival order; contexts moved off a failed socket go ahead of them
(they already hold a permit and were promised audio). The two kinds of waiter are two types: a
:class:`Request` someone awaits, a :class:`Move` nobody does.
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
class Request:
    """A caller awaiting placement on a socket, or (``resume``) only its permit back."""

    ctx: UpstreamContext
    fut: asyncio.Future[None]  # resolved when placed; the caller gives up by cancelling it
    since: float
    resume: bool = False  # a dormant context already on a socket: it needs a permit, not a slot

    @property
    def needs_permit(self) -> bool:
        """A request always takes a permit (it holds none while it waits)."""
        return True

    @property
    def abandoned(self) -> bool:
        """Its caller stopped waiting."""
        return self.fut.done()


@dataclass(eq=False)
class Move:
    """A context moved off a failed socket: nobody awaits it, and it ends with ``failure`` if it waits too long."""

    ctx: UpstreamContext
    failure: Failure  # reported if the wait runs out
    needs_permit: bool  # False when it kept the permit it had on the failed socket
    since: float
    timer: asyncio.TimerHandle | None = None

    @property
    def abandoned(self) -> bool:
        """A move is given up only by its own timer (:meth:`PlacementLine.remove`)."""
        return False


Waiter = Request | Move


class PlacementLine:
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

    def append(self, w: Request) -> None:
        """A first-time request joins the end of the line."""
        self._waiters.append(w)

    def insert_move(self, w: Move) -> None:
        """A moved context goes behind earlier moved ones, ahead of every first-time request."""
        index = next((i for i, x in enumerate(self._waiters) if not isinstance(x, Move)), len(self._waiters))
        self._waiters.insert(index, w)

    def remove(self, w: Waiter) -> bool:
        """Take ``w`` out of the line (and stop its expiry timer); False if it was not waiting."""
        if w not in self._waiters:
            return False
        self._waiters.remove(w)
        if isinstance(w, Move) and w.timer is not None:
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
            if w.abandoned:
                self.remove(w)
                continue
            if w.needs_permit and self.exhausted:
                break
            if isinstance(w, Request) and w.resume:
                self.remove(w)
                self.take(w.ctx)
                w.fut.set_result(None)
                continue
            slot = find(w.ctx)
            if slot is None:
                continue
            self.remove(w)
            if w.needs_permit:
                self.take(w.ctx)
            place(slot, w.ctx)
            if isinstance(w, Request):
                w.fut.set_result(None)

    def take(self, ctx: UpstreamContext) -> None:
        """``ctx`` takes a permit (the line's own placements, or the pool's placement at once)."""
        self.live += 1
        ctx.holds_permit = True

    def release(self, ctx: UpstreamContext) -> None:
        """Return ``ctx``'s permit (idempotent)."""
        if ctx.holds_permit:
            ctx.holds_permit = False
            self.live -= 1
