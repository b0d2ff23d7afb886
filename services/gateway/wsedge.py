"""The WebSocket edge both socket protocols share (native ``/v1/ws`` and the ElevenLabs sockets).

Reading with size limits, serialized sends, typed errors (reported and counted here, once each),
close-with-error, and shedding a client that stopped reading. What differs between the protocols
is only how an error looks on the wire and which close code it earns: an :class:`ErrorWire`.

``tts_errors_total`` counts errors *reported to clients*, so it is incremented in one place,
:meth:`ClientSocket.report`, when a frame naming the error goes out (context failures included;
the session itself counts nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from shared import metrics
from shared.errors import WS_MESSAGE_TOO_BIG, BinaryNotAccepted, MessageTooLarge, SlowConsumer, TTSError
from shared.settings import Settings

# A client whose bounded buffer overflowed gets this long to take its error and close frame; then its
# connection is cut. Its pipe may be full for good, and nothing may wait on it for ever.
SHED_GRACE_S = 2.0
HEARTBEAT_S = 20.0
_SHEDDING: set[asyncio.Task[None]] = set()  # the loop holds tasks only weakly


def prepare(settings: Settings, *, decode_text: bool = True) -> web.WebSocketResponse:
    """A client socket with the gateway's limits (call ``prepare(request)`` on it)."""
    # aiohttp's own limit is a backstop above ours, so that an oversize message is answered in words.
    return web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=settings.max_message_bytes * 4,
                                 compress=False, decode_text=decode_text)


async def receive_text(ws: web.WebSocketResponse, limit: int) -> str | bytes | None:
    """The next text message (None once the client closed); raises the error that ends the socket.

    Binary frames and messages over ``limit`` bytes are socket-level errors in both protocols.
    """
    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.TEXT:
            if len(msg.data) > limit:
                raise MessageTooLarge(f"messages are limited to {limit} bytes")
            data: str | bytes = msg.data
            return data
        if msg.type == WSMsgType.BINARY:
            raise BinaryNotAccepted("send JSON text frames; audio flows only from the server")
        if msg.type == WSMsgType.ERROR:
            if getattr(ws.exception(), "code", None) == WS_MESSAGE_TOO_BIG:
                raise MessageTooLarge("message exceeds the size limit")
            return None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None


@dataclass(frozen=True)
class ErrorWire:
    """How one protocol says an error: the frame, the close code it earns, the close reason."""

    # (error, the context it is about or None, close code or None while the socket stays open) -> text frame
    frame: Callable[[TTSError, str | None, int | None], str]
    close_code: Callable[[TTSError], int]
    close_reason: Callable[[str], bytes]


class ClientSocket:
    """One client WebSocket's output side: sends, error reports, close, shedding."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, wire: ErrorWire) -> None:
        self.ws = ws
        self.request = request
        self.wire = wire
        self.done = asyncio.Event()  # the socket must end (closed, or about to be)
        self._send_lock = asyncio.Lock()

    async def send(self, text: str) -> None:
        """Send one frame; a socket already gone is not an error here."""
        if self.ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(text)

    async def report(self, error: TTSError, context_id: str | None = None, close_code: int | None = None) -> None:
        """Tell the client about ``error`` (counted here: the one place errors are counted)."""
        metrics.CLIENT_ERRORS.labels(metrics.code_label(error.code)).inc()
        await self.send(self.wire.frame(error, context_id, close_code))

    async def close(self, code: int, reason: str = "") -> None:
        """Close the socket once (later calls do nothing)."""
        self.done.set()
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.close(code=code, message=self.wire.close_reason(reason))

    async def fail(self, error: TTSError, code: int | None = None) -> None:
        """Socket-level failure: the error frame, then the close code (``code`` overrides the protocol's)."""
        close_code = code or self.wire.close_code(error)
        await self.report(error, None, close_code)
        await self.close(close_code, error.code)

    def shed(self) -> None:
        """The client stopped reading: close it as a slow consumer, in the background (never blocks)."""
        task = asyncio.get_running_loop().create_task(self._shed())
        _SHEDDING.add(task)
        task.add_done_callback(_SHEDDING.discard)

    async def _shed(self) -> None:
        """Close with the slow-consumer error, but never wait on a full pipe for long.

        Sending the error and the close frame both wait for the client to drain what is already queued;
        a client that reads nothing would hold the session (and its upstream contexts) open for ever.
        After the grace the transport is aborted, which ends the reader, so the session and its contexts.
        """
        closing = asyncio.ensure_future(self.fail(SlowConsumer("client is not reading audio fast enough")))
        done, _ = await asyncio.wait({closing}, timeout=SHED_GRACE_S)
        if not done:
            closing.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await closing
            self.done.set()
            if self.request.transport is not None:
                self.request.transport.abort()
