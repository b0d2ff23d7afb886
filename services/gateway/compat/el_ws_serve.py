"""Run one ElevenLabs TTS WebSocket: authenticate (headers, query or the first message), parse the
query, then feed client messages to an :class:`~gateway.compat.el_ws.ElSocket` until it ends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from gateway.appkeys import SERVICES
from gateway.auth.principal import Principal
from gateway.compat import el_messages as m
from gateway.compat.auth_edge import has_credentials, principal_of
from gateway.compat.el_ws import WIRE, ElSocket
from gateway.compat.http_errors import el_error
from gateway.wsedge import ClientSocket, prepare, receive_text
from shared.errors import WS_NORMAL, Forbidden, MessageTooLarge, ShuttingDown, TTSError, Unauthorized

# Applies one parsed client message to the socket (the per-endpoint rules: el_ws_single / el_ws_multi).
MessageHandler = Callable[[ElSocket, m.ClientMessage], Awaitable[None]]


async def serve(request: web.Request, *, multi: bool, apply: MessageHandler) -> web.StreamResponse:
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
    ws = prepare(settings)
    await ws.prepare(request)
    bare = ClientSocket(ws, request, WIRE)  # until the socket is authenticated and has a session
    try:
        query = m.WsQuery.parse(request.query)
    except TTSError as e:
        await bare.fail(e)
        return ws
    if auth_error is not None and has_credentials(request):
        # The handshake carried a key and it was refused (unknown, revoked): a client that puts its key
        # there sends no other one, so waiting for a first message would only hold the socket open.
        await bare.fail(auth_error)
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
            await bare.fail(e)
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
            await _handle(sock, first, apply)
        if not sock.done.is_set():
            await _read(sock, apply)
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


async def _read(sock: ElSocket, apply: MessageHandler) -> None:
    limit = sock.services.settings.max_message_bytes
    while not sock.done.is_set():
        try:
            data = await receive_text(sock.ws, limit)
            if data is None:
                return
            parsed = m.parse_client_message(data if isinstance(data, str) else data.decode())
        except TTSError as e:
            await sock.fail(e)
            return
        await _handle(sock, parsed, apply)


async def _handle(sock: ElSocket, msg: m.ClientMessage, apply: MessageHandler) -> None:
    sock.last_message_at = time.monotonic()
    try:
        await apply(sock, msg)
    except TTSError as e:
        if sock.multi and e.ws_close is None:
            await sock.report(e, msg.context_id)
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
