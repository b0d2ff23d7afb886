"""Run one ElevenLabs TTS WebSocket: authenticate (headers, query or the first message), parse the
query, then feed client messages to an :class:`~gateway.compat.el_ws.ElSocket` until it ends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from gateway.appkeys import SERVICES
from gateway.auth import Principal
from gateway.compat import el_messages as m
from gateway.compat.auth_edge import has_credentials, principal_of
from gateway.compat.el_ws import ElSocket, close_code_for
from gateway.compat.http_errors import el_error
from shared import metrics
from shared.errors import (
    WS_MESSAGE_TOO_BIG,
    WS_NORMAL,
    BinaryNotAccepted,
    Forbidden,
    MessageTooLarge,
    ShuttingDown,
    TTSError,
    Unauthorized,
)

Dispatch = Callable[[ElSocket, m.ClientMessage], Awaitable[None]]


async def serve(request: web.Request, *, multi: bool, dispatch: Dispatch) -> web.StreamResponse:
    """Run one ElevenLabs TTS WebSocket: auth, query, then messages in and frames out until it ends."""
    services = request.app[SERVICES]
    settings = services.settings
    if services.draining:
        return el_error(ShuttingDown("gateway is restarting; reconnect"))
    principal: Principal | None = None
    auth_error: TTSError | None = None
    try:
        principal = await principal_of(request)
    except Forbidden as e:  # a page from a foreign origin: no socket at all
        return el_error(e)
    except TTSError as e:  # the key may still come in the first message
        auth_error = e
    # aiohttp's own limit is a backstop above ours, so that an oversize message is answered in words.
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=settings.max_message_bytes * 4, compress=False)
    await ws.prepare(request)
    try:
        query = m.WsQuery.parse(request.query)
    except TTSError as e:
        await _fail_bare(ws, e)
        return ws
    if auth_error is not None and has_credentials(request):
        # The handshake carried a key and it was refused (unknown, revoked): a client that puts its key
        # there sends no other one, so waiting for a first message would only hold the socket open.
        await _fail_bare(ws, auth_error)
        return ws
    first: m.ClientMessage | None = None
    if principal is None:
        try:
            first = await _first_message(ws, min(query.inactivity_timeout_s, settings.ws_auth_timeout_s),
                                         settings.max_message_bytes)
            if first is None or not first.api_key:
                raise auth_error or Unauthorized("missing API key")
            principal = await principal_of(request, first.api_key)
        except TTSError as e:
            await _fail_bare(ws, e)
            return ws
    sock = ElSocket(ws, request, services, voice_id=request.match_info["voice_id"], query=query, multi=multi,
                    tenant=principal.key_id)
    try:
        await sock.session.open()
    except TTSError as e:
        await sock.fail(e)
        return ws
    tasks = [asyncio.create_task(sock.write_events(), name=f"el-writer-{sock.session.id}"),
             asyncio.create_task(sock.watch_inactivity(), name=f"el-idle-{sock.session.id}")]
    try:
        if first is not None:
            await _handle(sock, first, dispatch)
        if not sock.done.is_set():
            await _read(sock, dispatch)
    finally:
        if sock.done.is_set():
            # The writer may be mid close handshake (waiting for the client's close frame): cancelling
            # it now would drop the connection and the client would see 1006, not our close code.
            await asyncio.wait(tasks, timeout=2.0)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await sock.session.close()
        if not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close(code=WS_NORMAL)
    return ws


async def _read(sock: ElSocket, dispatch: Dispatch) -> None:
    limit = sock.services.settings.max_message_bytes
    async for msg in sock.ws:
        if msg.type == WSMsgType.TEXT:
            if len(msg.data) > limit:
                await sock.fail(MessageTooLarge(f"messages are limited to {limit} bytes"))
                return
            try:
                parsed = m.parse_client_message(msg.data)
            except TTSError as e:
                await sock.fail(e)
                return
            await _handle(sock, parsed, dispatch)
        elif msg.type == WSMsgType.BINARY:
            await sock.fail(BinaryNotAccepted("send JSON text frames; audio flows only from the server"))
            return
        elif msg.type == WSMsgType.ERROR:
            if getattr(sock.ws.exception(), "code", None) == WS_MESSAGE_TOO_BIG:
                await sock.fail(MessageTooLarge("message exceeds the size limit"))
            return
        if sock.done.is_set():
            return


async def _handle(sock: ElSocket, msg: m.ClientMessage, dispatch: Dispatch) -> None:
    sock.last_message_at = time.monotonic()
    try:
        await dispatch(sock, msg)
    except TTSError as e:
        if sock.multi and e.ws_close is None:
            metrics.CLIENT_ERRORS.labels(e.code).inc()
            await sock.send(m.error_frame(e.code, e.message, context_id=msg.context_id))
        else:
            await sock.fail(e)


async def _first_message(ws: web.WebSocketResponse, deadline: float, limit: int) -> m.ClientMessage | None:
    """The message that must carry the key, within one absolute deadline.

    Not ``ws.receive(timeout=...)``: aiohttp restarts that timeout at every frame it handles itself,
    heartbeat pongs included, so a client that only answers pings held an unauthenticated socket for ever.
    """
    try:
        async with asyncio.timeout(deadline):
            msg = await ws.receive()
    except TimeoutError:
        shown = int(deadline) if float(deadline).is_integer() else deadline
        raise Unauthorized(f"no API key within {shown} seconds: send it in the first message") from None
    if msg.type != WSMsgType.TEXT:
        return None
    if len(msg.data) > limit:
        raise MessageTooLarge(f"messages are limited to {limit} bytes")
    return m.parse_client_message(msg.data)


async def _fail_bare(ws: web.WebSocketResponse, error: TTSError) -> None:
    code = close_code_for(error)
    metrics.CLIENT_ERRORS.labels(error.code).inc()
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(m.error_frame(error.code, error.message, close_code=code))
        await ws.close(code=code, message=m.close_reason(error.code))
