"""When a context holds upstream permits: only while it has text to synthesize (a mixin of the pool).

A context is opened without a permit or a socket slot (:meth:`PermitTiming.open`) and asks for both
at its first non-blank text (:meth:`~PermitTiming.wants_placement`); one that never sends any ends
with ``input_timeout`` after ``UPSTREAM_TEXT_WAIT_S``. Once placed, a context quiet for
``UPSTREAM_IDLE_RELEASE_S`` (nothing sent, no audio back, not awaiting audio) gives its permits
back and stays on its socket, dormant (:meth:`~PermitTiming.rest_idle`), until its next text asks
for them again (:meth:`~PermitTiming.wants_permit`). ElevenLabs counts time spent generating
against the plan's concurrency, not open contexts, so a tenant's quiet contexts cost the others
nothing.
"""

from __future__ import annotations

import asyncio

from shared.errors import TTSError, UpstreamError
from shared.logging import get_logger
from shared.settings import Settings
from worker.upstream_permits import AccountLimit

from .connection import UpstreamSocket
from .context import UpstreamContext
from .placement import PlacementLine

log = get_logger(__name__)


class PermitTiming:
    """The pool's side of lazy placement and idle release (``SocketPool`` provides the state)."""

    settings: Settings
    _placement: PlacementLine
    _account: AccountLimit | None
    _unplaced: set[UpstreamContext]  # opened, not (yet) on a socket
    _placing: set[asyncio.Task[None]]
    _closed: bool
    _session: object | None

    async def acquire(self, ctx: UpstreamContext, resume: bool = False) -> None:
        """Take permits (and a slot unless ``resume``); the pool implements it."""
        raise NotImplementedError

    def _release(self, ctx: UpstreamContext) -> None:
        raise NotImplementedError

    def _pump(self) -> None:
        raise NotImplementedError

    def place_at_once(self, ctx: UpstreamContext) -> bool:
        """:meth:`acquire` when nothing stands in the way (the pool implements it); False: nothing done."""
        raise NotImplementedError

    def open(self, ctx: UpstreamContext) -> None:
        """Take ``ctx`` in without a permit or a slot: those come at its first text (or never)."""
        if self._closed or self._session is None:
            raise UpstreamError("the ElevenLabs provider is not running")
        self._unplaced.add(ctx)
        ctx.wait_for_text(self.settings.upstream_text_wait_s)

    def wants_placement(self, ctx: UpstreamContext) -> None:
        """``ctx`` has text: placed now if nothing stands in the way (its text is on the socket's send
        queue when this returns), else it waits for a permit and a slot in the background; a refusal
        ends its stream."""
        if not ctx.dormant and self.place_at_once(ctx):
            self._unplaced.discard(ctx)
            return
        task = asyncio.get_running_loop().create_task(self._place_when_possible(ctx),
                                                      name=f"elevenlabs-place-{ctx.id}")
        ctx.placing = task
        self._placing.add(task)
        task.add_done_callback(self._placing.discard)

    def wants_permit(self, ctx: UpstreamContext) -> None:
        """A dormant ``ctx`` has something to synthesize: permits again (same line, same bounded wait)."""
        self.wants_placement(ctx)

    async def _place_when_possible(self, ctx: UpstreamContext) -> None:
        resume = ctx.dormant
        try:
            await self.acquire(ctx, resume=resume)
        except TTSError as e:
            ctx.fail(e)
        else:
            if resume:
                ctx.resume()
        finally:
            ctx.placing = None
            self._unplaced.discard(ctx)

    def _rest(self, ctx: UpstreamContext) -> None:
        """``ctx`` idles on its socket: its permits go to whoever waits (it keeps its slot)."""
        ctx.rest()
        self._placement.release(ctx)
        if self._account is not None:
            self._account.release(ctx.id)
        log.debug("upstream_context_dormant", context_id=ctx.id)

    def unplaced_cancelled(self, ctx: UpstreamContext) -> None:
        """A context cancelled while waiting for a (first or retry) placement gives its permit back."""
        self._unplaced.discard(ctx)
        if ctx.placing is not None and ctx.placing is not asyncio.current_task():
            ctx.placing.cancel()  # its acquire gives back a ticket or a permit it got meanwhile
        w = self._placement.find(ctx)
        if w is not None:
            self._placement.remove(w)
        self._release(ctx)
        self._pump()

    def forget(self, ctx: UpstreamContext) -> None:
        """``ctx`` ended before it asked for placement."""
        self._unplaced.discard(ctx)

    def rest_idle(self, sock: UpstreamSocket, now: float) -> None:
        """Dormant: contexts on ``sock`` quiet for ``UPSTREAM_IDLE_RELEASE_S`` give their permits back."""
        idle_s = self.settings.upstream_idle_release_s
        for ctx in list(sock.contexts.values()):
            if ctx.holds_permit and ctx.live and not ctx.ended and not ctx.upstream_closed \
                    and ctx.placing is None and not ctx.awaiting_audio and now - ctx.last_activity >= idle_s:
                self._rest(ctx)
