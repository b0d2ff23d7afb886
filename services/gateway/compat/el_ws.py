"""One ElevenLabs-compatible client WebSocket over one :class:`SynthesisSession`.

Shared by ``stream-input`` (one context, the socket ends after it) and ``multi-stream-input``.
Client context ids are the client's; each incarnation of one runs in the session under a fresh
internal id, so audio of an earlier incarnation can never be labelled with a later one.

Rules (where ElevenLabs is unsettled, the choice is the one that keeps real clients working):

- A context starts at the first message that names it with text or ``flush`` (the init ``" "``
  included) and is enqueued at once, so the worker's upstream context is ready before the text.
- A keep-alive (``text: ""`` without flush/close) never creates a context: it only resets timers
  (pipecat's id-less keep-alive and a keep-alive racing a context's init cost nothing).
- ``voice_settings`` are fixed by a context's first message; later ones are ignored, not fatal.
- ``close_context`` ends input: buffered text is still spoken, then ``isFinal``. A close for an id
  that never ran still gets an ``isFinal``; every closed context gets exactly one. With
  ``"immediate": true`` (an extension) the context is cancelled instead: no more audio, its
  ``isFinal`` at once, its job cancelled and its slot free (barge-in that stops paying).
- Text for an id whose earlier incarnation is still draining starts a new context under that id;
  the draining one is cancelled and its remaining output dropped (it would be indistinguishable).
- More than ``COMPAT_MAX_CONTEXTS_PER_SOCKET`` live contexts: only the new one gets an error frame
  (``too_many_contexts``) and later its ``isFinal``; the socket and the other contexts go on.
- A failed context gets an error frame naming it, then its ``isFinal`` (pipecat ignores errors).
- Inactivity: a context without messages for ``inactivity_timeout`` has its input ended (its
  audio finishes normally); a socket with nothing in flight for that long (no live context and no
  client message; the clock starts at the later of the last message and the last context ending)
  is closed with 1008 and ElevenLabs' text. A client waiting for its own audio is never idle. On
  ``stream-input`` the socket closes when its context idles.
- Contexts refused at start (limit, bad request) are remembered so their later messages are
  dropped, but only the most recent ``_REJECTED_MEMORY`` of them: a client that never closes them
  cannot grow the socket's maps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.compat import el_messages as m
from gateway.contexts import ContextUsage
from gateway.ctxtrace import mark_sent, request_carrier
from gateway.events import AudioEvent, ErrorEvent, FinalEvent, SessionClosing
from gateway.requests import build_request
from gateway.services import GatewayServices
from gateway.session import SynthesisSession
from gateway.wsedge import ClientSocket, ErrorWire
from shared.errors import (
    WS_GOING_AWAY,
    WS_INTERNAL_ERROR,
    WS_MESSAGE_TOO_BIG,
    WS_NORMAL,
    WS_POLICY_VIOLATION,
    ContextClosed,
    InternalError,
    MessageTooLarge,
    ServiceUnavailable,
    ShuttingDown,
    Timeout,
    TTSError,
)
from shared.logging import get_logger

log = get_logger(__name__)
_RECENT_ENDED = 256
_REJECTED_MEMORY = 256


def close_code_for(error: TTSError) -> int:
    """ElevenLabs closes on errors with 1008; restarts, overload and internal failures say so."""
    if isinstance(error, ShuttingDown):
        return WS_GOING_AWAY
    if isinstance(error, MessageTooLarge):
        return WS_MESSAGE_TOO_BIG
    if isinstance(error, ServiceUnavailable | InternalError):
        return WS_INTERNAL_ERROR
    return WS_POLICY_VIOLATION


# ElevenLabs' error frame: ``contextId`` when it is about one context, ``code`` when the socket closes.
WIRE = ErrorWire(frame=lambda e, cid, close: m.error_frame(e.code, e.message, context_id=cid, close_code=close),
                 close_code=close_code_for, close_reason=m.close_reason)


@dataclass
class ClientContext:
    """One incarnation of a client's context id."""

    client_id: str | None  # None: the multi-stream default context (messages without context_id)
    internal_id: str
    voice_settings: dict[str, Any]
    last_activity: float = field(default_factory=time.monotonic)
    input_closed: bool = False
    muted: bool = False  # superseded by a newer incarnation, or failed here: the session's output is dropped
    ended: bool = False  # its isFinal went out
    rejected: bool = False  # never ran (limit, bad request): its messages are dropped until close


class ElSocket(ClientSocket):
    """Client messages in, ElevenLabs frames out, for one socket."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, services: GatewayServices, *,
                 voice_id: str, query: m.WsQuery, multi: bool, tenant: str) -> None:
        super().__init__(ws, request, WIRE)
        self.services = services
        self.voice_id = voice_id
        self.query = query
        self.multi = multi
        self.session = SynthesisSession(services, api="el_multi" if multi else "el_single", tenant=tenant,
                                        max_contexts=services.settings.compat_max_contexts_per_socket)
        self.session.on_overflow = self.shed
        self.contexts: dict[str | None, ClientContext] = {}
        self.by_internal: dict[str, ClientContext] = {}
        self.recent_ended: OrderedDict[str | None, None] = OrderedDict()
        self.rejected: OrderedDict[str | None, None] = OrderedDict()
        self.last_message_at = time.monotonic()
        # When the socket last had a context in flight: idleness is counted from the later of this and
        # the last client message (a client waiting for its round's audio sends nothing).
        self.last_busy_at = self.last_message_at
        self.closing = False  # close_socket (or stream-input's end): finish, then close 1000
        self._serial = 0

    # ---- output ------------------------------------------------------------------------------------
    async def write_events(self) -> None:
        """Turn session events into frames until the socket ends."""
        width = self.query.fmt.bytes_per_sample or 1
        while not self.ws.closed:
            event = await self.session.next_event()
            if isinstance(event, SessionClosing):
                await self.fail(event.error)
                return
            ctx = self.by_internal.get(event.context_id or "")
            if ctx is None:
                continue
            if isinstance(event, AudioEvent):
                for frame in m.audio_frames(event.audio, event.alignment, self._wire_id(ctx), width):
                    if ctx.muted:
                        break  # cancelled (immediate close) while this chunk was going out
                    await self.send(frame)
                mark_sent(event)
                continue
            self._forget(ctx)
            if ctx.muted:
                continue
            if isinstance(event, ErrorEvent):
                if not self.multi:
                    await self.fail(event.error)
                    return
                await self.report(event.error, self._wire_id(ctx))
            await self.send_final(ctx, event.usage if isinstance(event, FinalEvent) else None)
            if (isinstance(event, FinalEvent) and not self.multi) or self.done.is_set():
                await self.close(WS_NORMAL)
                return

    def _wire_id(self, ctx: ClientContext) -> str | None:
        return ctx.client_id if self.multi else None

    async def send_final(self, ctx: ClientContext, usage: ContextUsage | None = None) -> None:
        """The context's one isFinal (with the context's usage where it ran to an end here)."""
        ctx.ended = True
        self.last_busy_at = time.monotonic()
        self._remember_ended(ctx.client_id)
        if ctx.rejected:
            self.rejected.pop(ctx.client_id, None)
        if self.multi and self.contexts.get(ctx.client_id) is ctx:
            del self.contexts[ctx.client_id]  # a long-lived socket sees endless fresh ids (LiveKit, pipecat)
        await self.send(m.final_frame(self._wire_id(ctx), usage.to_el_json() if usage is not None else None))
        if self.closing and not self._live():
            await self.close(WS_NORMAL)

    async def send_unknown_final(self, client_id: str | None) -> None:
        """isFinal for a context closed without ever running here."""
        self._remember_ended(client_id)
        await self.send(m.final_frame(client_id if self.multi else None))

    def _remember_ended(self, client_id: str | None) -> None:
        self.recent_ended[client_id] = None
        self.recent_ended.move_to_end(client_id)
        while len(self.recent_ended) > _RECENT_ENDED:
            self.recent_ended.popitem(last=False)

    def _forget(self, ctx: ClientContext) -> None:
        self.by_internal.pop(ctx.internal_id, None)

    def _remember_rejected(self, ctx: ClientContext) -> None:
        """Keep a refused context (its messages are dropped until its close), boundedly."""
        self.rejected[ctx.client_id] = None
        self.rejected.move_to_end(ctx.client_id)
        while len(self.rejected) > _REJECTED_MEMORY:
            oldest, _ = self.rejected.popitem(last=False)
            old = self.contexts.get(oldest)
            if old is not None and old.rejected:
                del self.contexts[oldest]  # a later message for it is treated as a new context

    def _live(self) -> list[ClientContext]:
        return [c for c in self.contexts.values() if not c.ended and not c.rejected]

    # ---- input ---------------------------------------------------------------------------------------
    async def open_context(self, client_id: str | None, msg: m.ClientMessage) -> ClientContext:
        """Start a new incarnation of ``client_id`` (cancelling a draining one); may come back rejected."""
        old = self.contexts.get(client_id)
        if old is not None and not old.ended and not old.rejected:
            old.muted = True
            old.ended = True
            with contextlib.suppress(TTSError):
                await self.session.cancel(old.internal_id, "cancelled")
        self._serial += 1
        ctx = ClientContext(client_id, f"{self._serial}", msg.voice_settings or {})
        self.contexts[client_id] = ctx
        self.recent_ended.pop(client_id, None)
        self.rejected.pop(client_id, None)
        text = "" if msg.text is None or msg.text == " " else msg.text
        options = dict(self.query.options)
        if msg.chunk_length_schedule is not None:
            options["chunk_length_schedule"] = msg.chunk_length_schedule
        try:
            req = await build_request(self.services.catalog, context_id=ctx.internal_id, voice=self.voice_id,
                                      model=self.query.model_id, fmt=self.query.fmt.name,
                                      voice_settings=ctx.voice_settings, options=options, text=text,
                                      trace_parent=request_carrier(self.request))
            self.by_internal[ctx.internal_id] = ctx
            await self.session.start(req)
            if msg.flush:
                await self.session.send_text(ctx.internal_id, "", flush=True)
        except TTSError as e:
            self.by_internal.pop(ctx.internal_id, None)
            if self.session.contexts.get(ctx.internal_id) is not None:
                with contextlib.suppress(TTSError):
                    await self.session.cancel(ctx.internal_id, "cancelled")
            if not self.multi:
                raise
            ctx.rejected = True
            self._remember_rejected(ctx)
            await self.report(e, client_id)
        return ctx

    async def end_context(self, ctx: ClientContext) -> None:
        """No more text: buffered text is spoken, then the final."""
        if ctx.input_closed or ctx.ended:
            return
        ctx.input_closed = True
        with contextlib.suppress(ContextClosed, ServiceUnavailable):
            await self.session.end_input(ctx.internal_id)

    async def cancel_context(self, ctx: ClientContext) -> None:
        """``close_context`` with ``immediate``: no more audio, the final now, the job cancelled."""
        if ctx.ended:
            return
        ctx.muted = True
        state = self.session.contexts.get(ctx.internal_id)  # its usage is set when the session ends it
        with contextlib.suppress(TTSError):
            await self.session.cancel(ctx.internal_id, "cancelled")
        await self.send_final(ctx, state.usage if state is not None else None)

    async def send_text(self, ctx: ClientContext, text: str, flush: bool) -> None:
        """Append text to a running context."""
        ctx.last_activity = time.monotonic()
        if text or flush:
            try:
                await self.session.send_text(ctx.internal_id, text, flush)
            except (ContextClosed, ServiceUnavailable):
                pass  # it ended a moment ago, or the session failed it: its error/final is on its way
            except TTSError as e:  # text_too_long: the context ends with that error
                await self.fail_context(ctx, e)

    async def fail_context(self, ctx: ClientContext, error: TTSError) -> None:
        """End a running context here with ``error`` (then its final); on stream-input, the socket."""
        if not self.multi:
            raise error
        ctx.muted = True
        with contextlib.suppress(TTSError):
            await self.session.cancel(ctx.internal_id, "cancelled")
        self._forget(ctx)
        await self.report(error, ctx.client_id)
        await self.send_final(ctx)

    async def begin_close(self) -> None:
        """``close_socket``: end every context's input; close 1000 once the last final went out."""
        self.closing = True
        for ctx in list(self.contexts.values()):
            if ctx.rejected and not ctx.ended:
                await self.send_final(ctx)
        for ctx in self._live():
            await self.end_context(ctx)
        if not self._live():
            await self.close(WS_NORMAL)

    async def watch_inactivity(self) -> None:
        """Enforce ``inactivity_timeout`` (see the module docstring)."""
        timeout = self.query.inactivity_timeout_s
        step = min(0.25, timeout / 4)
        while not self.done.is_set():
            await asyncio.sleep(step)
            now = time.monotonic()
            live = self._live()
            if live:
                self.last_busy_at = now
            if not self.multi:
                idle = now - self.last_message_at > timeout
                if idle and not any(c.input_closed for c in live):
                    await self.fail(Timeout(m.inactivity_message(timeout)))
                    return
                continue
            for ctx in live:
                if not ctx.input_closed and now - ctx.last_activity > timeout:
                    await self.end_context(ctx)
            if not live and now - max(self.last_message_at, self.last_busy_at) > timeout:
                await self.fail(Timeout(m.inactivity_message(timeout)))
                return

