"""One pooled ``multi-stream-input`` socket: a send loop, a receive loop, its contexts and their keep-alives.

The socket owns the contexts placed on it until each one's final arrives (only then is the slot
free). It never sends a message for a context it has not initialised: every context's init is
queued before anything else about it, and the single send loop keeps that order. When the socket
ends for any reason other than our own close, every context still on it is handed back to the pool
with a :class:`~.messages.Failure`, which decides between a transparent retry and an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import itertools
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import aiohttp

from shared.errors import UpstreamDisconnected, UpstreamError
from shared.logging import get_logger
from shared.metrics import UPSTREAM_CONNECT

from . import messages
from .context import UpstreamContext
from .messages import MALFORMED, STALLED, Failure, MalformedFrame, classify_close, classify_handshake
from .options import SocketKey

log = get_logger(__name__)

# ElevenLabs sends frames above aiohttp's 4 MiB default; it accepts up to 16 MiB itself.
MAX_FRAME_BYTES = 16 * 1024 * 1024
_ids = itertools.count(1)


class SocketState(enum.Enum):
    """Where a socket is in its life; draining is a flag on top of OPEN/CONNECTING."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


class SocketListener(Protocol):
    """The pool's side of a socket's events (all called from the event loop, never concurrently)."""

    def socket_opened(self, sock: UpstreamSocket) -> None:
        """The handshake completed."""

    def socket_closed(self, sock: UpstreamSocket, failure: Failure | None, orphans: list[UpstreamContext]) -> None:
        """The socket ended (``failure`` None only for a close we asked for) with ``orphans`` still on it."""

    def context_freed(self, sock: UpstreamSocket, ctx: UpstreamContext) -> None:
        """``ctx``'s final arrived (or it gave up on ``sock`` still dialling): its slot on ``sock`` is free."""

    def socket_degraded(self, sock: UpstreamSocket) -> None:
        """``sock`` stopped taking contexts (a slot may never come back); replace it."""

    def socket_healthy(self, sock: UpstreamSocket) -> None:
        """``sock`` delivered audio: the upstream works for its key."""

    def to_local(self, ctx: UpstreamContext, failure: Failure) -> bool:
        """``ctx`` found no socket in time: True if the local voice took the rest of it over."""


class UpstreamSocket:
    """One upstream WebSocket for one :class:`SocketKey`; at most ``cap`` live contexts."""

    def __init__(self, key: SocketKey, *, url: str, session: aiohttp.ClientSession, headers: dict[str, str],
                 listener: SocketListener, connect_timeout_s: float, heartbeat_s: float | None,
                 delay_s: float = 0.0, provider: str = "elevenlabs", hold: Callable[[float], float] | None = None) -> None:
        """Prepare (not start) a socket to ``url``; ``delay_s``: its booked wait before dialling; ``hold``:
        given when it was booked, how much longer to wait (the pool re-books it after a busy refusal)."""
        self.sid = next(_ids)
        self.key = key
        self.state = SocketState.CONNECTING
        self.contexts: dict[str, UpstreamContext] = {}
        self.draining = False  # takes no new contexts; closed once the last one's final arrived
        self.replacing = False  # idle refresh: closed as soon as a sibling is open
        self.uses = 0
        now = time.monotonic()
        self.created_at = now
        self.opened_at: float | None = None
        self.last_sent = now
        self.last_received = now
        self._url = url
        self._session = session
        self._headers = headers
        self._listener = listener
        self._connect_timeout_s = connect_timeout_s
        self._heartbeat_s = heartbeat_s
        self._delay_s = delay_s
        self._hold = hold
        self.retry_after_s: float | None = None  # from a refused handshake's Retry-After
        self.booked_at = now  # when its handshake was (last) scheduled
        self._provider = provider
        self._out: asyncio.Queue[str] = asyncio.Queue()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._healthy = False
        self.lost_contexts = 0  # contexts still on the socket when it ended
        self._error: tuple[str | None, str | None] = (None, None)

    def __repr__(self) -> str:
        return f"<UpstreamSocket #{self.sid} {self.state.value} load={self.load}>"

    @property
    def load(self) -> int:
        """Contexts holding a slot here (placed, not yet final)."""
        return len(self.contexts)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The socket's connect-and-receive task (None before :meth:`start`)."""
        return self._task

    def start(self) -> None:
        """Dial in the background; contexts may be placed before the handshake completes."""
        # A fresh context: the socket outlives the job that opened it, so its log lines must not
        # carry that job's session/context/job ids.
        self._task = asyncio.create_task(self._run(), name=f"elevenlabs-socket-{self.sid}",
                                         context=contextvars.Context())

    # -- contexts -----------------------------------------------------------------------------------------
    def assign(self, ctx: UpstreamContext) -> None:
        """Take ``ctx``: its init (and any text it already has) goes out before anything else about it."""
        self.contexts[ctx.id] = ctx
        self.uses += 1
        ctx.attach(self)
        for msg in ctx.replay():
            self._out.put_nowait(msg)
        ctx.last_sent = time.monotonic()

    def enqueue(self, ctx: UpstreamContext, msg: str) -> None:
        """Queue a message about an already initialised context."""
        ctx.last_sent = time.monotonic()
        self._out.put_nowait(msg)

    def end_context(self, ctx: UpstreamContext) -> None:
        """End of input: generate the rest, then close (LiveKit's order: flush, then close_context)."""
        if not ctx.upstream_closed:
            self.enqueue(ctx, messages.flush(ctx.id))
            self.enqueue(ctx, messages.close_context(ctx.id))
            ctx.note_closed()

    def close_context(self, ctx: UpstreamContext) -> None:
        """Close ``ctx`` upstream now (cancel/fail); its slot stays taken until the final."""
        if not ctx.upstream_closed:
            self.enqueue(ctx, messages.close_context(ctx.id))
            ctx.note_closed()

    def send_keepalives(self, now: float, interval: float) -> None:
        """Keep quiet, initialised, still-open contexts alive; closed ones must not be named again."""
        for ctx in self.contexts.values():
            if not ctx.upstream_closed and now - ctx.last_sent >= interval:
                self.enqueue(ctx, messages.keep_alive(ctx.id))

    def context_timed_out(self, ctx: UpstreamContext) -> None:
        """``ctx`` waited past its deadline: the socket stalled, or just this context did."""
        if self.state is SocketState.CLOSED:
            return
        if self.state is SocketState.CONNECTING:
            # Still dialling (booked behind other handshakes, or held after a busy refusal): waiting for
            # a socket is no failure, so the context gets one more deadline. After that it gives up.
            now = time.monotonic()
            if ctx.unreached_since is None:
                ctx.unreached_since = now
            if now - ctx.unreached_since < ctx.timeout_s * 0.9:
                ctx.extend_deadline()
                return
            if self._listener.to_local(ctx, classify_handshake(None)):
                self.close_context(ctx)  # should the handshake still complete, the upstream drops it at once
                return
            self._withdraw(ctx)
            ctx.fail(UpstreamDisconnected(f"could not connect upstream within {ctx.timeout_s:g}s",
                                          audio_sent=ctx.audio_sent))
            return
        if time.monotonic() - self.last_received >= ctx.timeout_s * 0.99:
            ctx.no_retry = True  # it had its time; the others on the socket move elsewhere
            self.fail(STALLED)
            return
        log.warning("upstream_context_timeout", socket=self.sid, context_id=ctx.id,
                    audio_sent=ctx.audio_sent)
        ctx.fail(ctx.timeout_error())
        self._degrade()

    def _withdraw(self, ctx: UpstreamContext) -> None:
        """Take ``ctx`` off this still-dialling socket: the upstream has not heard of it, so nothing about
        it goes out, and its slot and permit return now rather than when the dial resolves (a context
        that gave up holds no capacity; the dial may take seconds more, or never succeed)."""
        del self.contexts[ctx.id]
        queued = [self._out.get_nowait() for _ in range(self._out.qsize())]
        for msg in queued:
            if messages.context_of(msg) != ctx.id:
                self._out.put_nowait(msg)
        ctx.detach()
        self._listener.context_freed(self, ctx)

    # -- life cycle ---------------------------------------------------------------------------------------
    def fail(self, failure: Failure) -> None:
        """End the socket now for ``failure`` (hand its contexts back, then tear the connection down)."""
        if self.state is SocketState.CLOSED:
            return
        self._finish(failure)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    async def close(self) -> None:
        """Close on purpose; contexts still here are handed back without a failure."""
        self._closing = True
        task = self._task
        if task is None:
            self._finish(None)
            return
        if not task.done():
            ws = self._ws
            if ws is not None and self.state is SocketState.OPEN:
                with contextlib.suppress(Exception):
                    await ws.close()
            else:
                task.cancel()
        await asyncio.wait([task])

    async def _run(self) -> None:
        ws: aiohttp.ClientWebSocketResponse | None = None
        sender: asyncio.Task[None] | None = None
        try:
            self.booked_at = time.monotonic()
            if self._delay_s > 0:
                await asyncio.sleep(self._delay_s)
            while self._hold is not None and (pause := self._hold(self.booked_at)) > 0:
                self.booked_at = time.monotonic()  # refused as busy meanwhile: a new place, not into the storm
                await asyncio.sleep(pause)
            ws = await self._connect()
            if ws is None:
                return
            self._ws = ws
            self.state = SocketState.OPEN
            self.opened_at = self.last_sent = self.last_received = time.monotonic()
            self._listener.socket_opened(self)
            sender = asyncio.create_task(self._send_loop(ws), name=f"elevenlabs-send-{self.sid}")
            failure = await self._receive_loop(ws)
            self._finish(failure)
        except asyncio.CancelledError:
            self._finish(None)
            raise
        except Exception as e:  # a bug here must not leave contexts hanging
            log.exception("upstream_socket_crashed", socket=self.sid)
            self._finish(Failure("internal", UpstreamError(f"upstream socket error ({type(e).__name__})")))
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            if ws is not None and not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse | None:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                ws = await self._session.ws_connect(
                    self._url, headers=self._headers, max_msg_size=MAX_FRAME_BYTES, autoping=True,
                    heartbeat=self._heartbeat_s, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0))
        except aiohttp.WSServerHandshakeError as e:
            self.retry_after_s = _retry_after(e.headers)
            log.info("upstream_handshake_refused", socket=self.sid, status=e.status, retry_after_s=self.retry_after_s)
            self._finish(classify_handshake(e.status))
            return None
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            log.info("upstream_connect_failed", socket=self.sid, error=type(e).__name__)
            self._finish(classify_handshake(None))
            return None
        UPSTREAM_CONNECT.labels(self._provider).observe(time.monotonic() - t0)
        return ws

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while True:
                msg = await self._out.get()
                await ws.send_str(msg)
                self.last_sent = time.monotonic()
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            # The receive loop normally sees the close first; if not, this is the drop.
            if not self._closing:
                self.fail(classify_close(None, ""))

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse) -> Failure | None:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    frame = messages.parse_frame(msg.data)
                except MalformedFrame:
                    return MALFORMED
                self._route_frame(frame)
                if self.state is SocketState.CLOSED:
                    return None  # failed while handling the frame; contexts are already handed back
                continue
            if msg.type is aiohttp.WSMsgType.BINARY:
                return MALFORMED
            if self._closing:
                return None
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return classify_close(int(msg.data), str(msg.extra or ""), *self._error)
            # CLOSING/CLOSED/ERROR: the connection went away without a close frame we could read.
            code = ws.close_code
            return classify_close(code if code not in (None, 1006) else None, "", *self._error)

    def _route_frame(self, frame: messages.ServerFrame) -> None:
        self.last_received = time.monotonic()
        ctx = self.contexts.get(frame.context_id) if frame.context_id is not None else None
        if frame.error is not None:
            self._on_error_frame(frame, ctx)
            return
        if ctx is None:
            return  # not ours (a default context, or a server extension): nothing to route
        if frame.bad_audio:
            log.warning("upstream_bad_audio", socket=self.sid, context_id=ctx.id)
            ctx.fail(UpstreamError("upstream sent undecodable audio", audio_sent=ctx.audio_sent))
        elif frame.audio:
            ctx.on_audio(frame.audio, frame.alignment)
            if not self._healthy:
                self._healthy = True
                self._listener.socket_healthy(self)
        if frame.is_final:
            del self.contexts[ctx.id]
            ctx.on_final()
            self._listener.context_freed(self, ctx)

    def _on_error_frame(self, frame: messages.ServerFrame, ctx: UpstreamContext | None) -> None:
        # A 1008 close usually follows; its classification uses this frame's code and message.
        self._error = (frame.error, frame.message)
        failure = classify_close(1008, "", frame.error, frame.message)
        log.warning("upstream_error_frame", socket=self.sid, error=frame.error, reason=failure.reason,
                    context_id=ctx.id if ctx else None)
        if ctx is None:
            return
        if failure.retry:
            self.fail(failure)  # trouble on this socket: move what can still move
            return
        ctx.fail(failure.for_context(ctx.audio_sent))
        self._degrade()

    def _degrade(self) -> None:
        if not self.draining:
            self.draining = True
            self._listener.socket_degraded(self)

    def _finish(self, failure: Failure | None) -> None:
        if self.state is SocketState.CLOSED:
            return
        self.state = SocketState.CLOSED
        orphans = list(self.contexts.values())
        self.lost_contexts = sum(1 for c in orphans if c.live)
        self.contexts.clear()
        for ctx in orphans:
            ctx.detach()
        self._listener.socket_closed(self, failure, orphans)


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form only; capped at a minute)."""
    raw = headers.get("Retry-After") if headers else None
    try:
        return min(60.0, max(0.0, float(raw))) if raw is not None else None
    except ValueError:
        return None
