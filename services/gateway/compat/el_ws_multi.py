"""``GET /v1/text-to-speech/{voice_id}/multi-stream-input``: many contexts on one client socket.

The message rules (context creation, keep-alives, close_context, reuse of ids, the per-socket
limit) are documented in :mod:`gateway.compat.el_ws`.
"""

from __future__ import annotations

import time

from aiohttp import web

from gateway.compat import el_messages as m
from gateway.compat.el_ws import ElSocket
from gateway.compat.el_ws_serve import serve


async def multi_stream_ws(request: web.Request) -> web.StreamResponse:
    """The multi-context ElevenLabs WebSocket."""
    return await serve(request, multi=True, apply=apply_message)


async def apply_message(sock: ElSocket, msg: m.ClientMessage) -> None:
    """Apply one client message."""
    if sock.closing:
        return  # after close_socket nothing new is accepted; the socket closes after the last final
    if msg.close_socket:
        await sock.begin_close()
        return
    cid = msg.context_id
    ctx = sock.contexts.get(cid)
    live = ctx is not None and not ctx.ended
    if msg.close_context:
        if ctx is not None and live:
            if ctx.rejected:
                await sock.send_final(ctx)
                return
            if msg.immediate:
                await sock.cancel_context(ctx)  # barge-in: stop paying for audio nobody will play
                return
            if msg.text and not ctx.input_closed:
                await sock.send_text(ctx, msg.text, msg.flush)
            await sock.end_context(ctx)
        elif cid not in sock.recent_ended:
            await sock.send_unknown_final(cid)  # never ran here; still exactly one final
        return
    if msg.is_keepalive:
        if ctx is not None and live:
            ctx.last_activity = time.monotonic()
        return
    if ctx is not None and live and ctx.rejected:
        return
    if ctx is None or not live or ctx.input_closed:
        await sock.open_context(cid, msg)
        return
    await sock.send_text(ctx, msg.text or "", msg.flush)
