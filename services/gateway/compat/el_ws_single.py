"""``GET /v1/text-to-speech/{voice_id}/stream-input``: one context; the socket ends after its final.

``{"text":" "}`` first (BOS, may carry voice_settings/generation_config/a key), then text, then
``{"text":""}`` (EOS): the rest is spoken, ``{"isFinal":true}`` follows and the server closes
with 1000. ``{"close_context": true, "immediate": true}`` (an extension) stops at once: no more
audio, ``isFinal``, close 1000. Whitespace-only text after BOS is forwarded (it may separate two words). Nothing is
accepted after EOS. ``close_context``/``close_socket`` act as EOS.
"""

from __future__ import annotations

from aiohttp import web

from gateway.compat import el_messages as m
from gateway.compat.el_ws import ElSocket
from gateway.compat.el_ws_serve import serve
from shared.errors import WS_NORMAL


async def stream_input_ws(request: web.Request) -> web.StreamResponse:
    """The single-context ElevenLabs WebSocket."""
    return await serve(request, multi=False, apply=apply_message)


async def apply_message(sock: ElSocket, msg: m.ClientMessage) -> None:
    """Apply one client message."""
    ctx = sock.contexts.get(None)
    if ctx is None:
        ctx = await sock.open_context(None, msg)
        if msg.text == "" or msg.close_context or msg.close_socket:
            await sock.end_context(ctx)
        return
    if msg.close_context and msg.immediate and not ctx.ended:
        await sock.cancel_context(ctx)  # the extension: the stream ends now, without the rest of its audio
        await sock.close(WS_NORMAL)
        return
    if ctx.input_closed:
        return
    if msg.text == "" or msg.close_context or msg.close_socket:
        await sock.end_context(ctx)
        return
    await sock.send_text(ctx, msg.text or "", msg.flush)
