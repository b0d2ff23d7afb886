"""The native WebSocket endpoint: JSON control and events, binary audio frames (see frames.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from gateway.appkeys import SERVICES
from gateway.auth import authenticate
from gateway.events import AudioEvent, ErrorEvent, FinalEvent, SessionClosing
from gateway.http_errors import error_response
from gateway.native import messages as m
from gateway.native.frames import encode_audio_frame
from gateway.requests import build_request
from gateway.session import SynthesisSession
from shared import metrics
from shared.audio.clock import PlayClock
from shared.errors import (
    WS_GOING_AWAY,
    WS_INTERNAL_ERROR,
    WS_MESSAGE_TOO_BIG,
    WS_NORMAL,
    BinaryNotAccepted,
    InternalError,
    MessageTooLarge,
    SlowConsumer,
    TTSError,
)
from shared.logging import get_logger

log = get_logger(__name__)
PROTOCOL_VERSION = 1
# A client whose bounded buffer overflowed gets this long to take its error and close frame; then its
# connection is cut. Its pipe may be full for good, and nothing may wait on it for ever.
SHED_GRACE_S = 2.0


async def native_ws(request: web.Request) -> web.StreamResponse:
    """``GET /v1/ws``: one session per connection."""
    services = request.app[SERVICES]
    settings = services.settings
    if services.draining:
        raise web.HTTPServiceUnavailable(text='{"code":"shutting_down"}', content_type="application/json")
    try:
        principal = await authenticate(request)
    except TTSError as e:  # before the upgrade: a plain HTTP answer any client library can read
        return error_response(e)
    # aiohttp's own limit is a backstop above ours, so that we can answer oversize messages in words. Text
    # frames arrive undecoded for the same reason: aiohttp would drop a non-UTF-8 frame's connection with
    # a bare 1007 (and a reset if more frames followed); the parser answers it with invalid_json instead.
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=settings.max_message_bytes * 4, compress=False,
                               decode_text=False)
    await ws.prepare(request)
    session = SynthesisSession(services, api="native", tenant=principal.key_id)
    shedding: set[asyncio.Task[None]] = set()

    def overflow() -> None:
        # Keep a reference: the loop holds tasks only weakly.
        task = asyncio.get_running_loop().create_task(_shed(ws, request))
        shedding.add(task)
        task.add_done_callback(shedding.discard)

    session.on_overflow = overflow
    try:
        await session.open()
    except TTSError as e:
        await _close(ws, e, code=1011)
        return ws
    await ws.send_json({"type": "session", "session_id": session.id, "protocol": PROTOCOL_VERSION})
    # Per started context (oldest first per id, so a reused id never takes an older one's clock): where its
    # next chunk starts. Registered at start, before any audio can be queued; dropped at its final/error.
    clocks: dict[str, deque[PlayClock]] = {}
    writer = asyncio.create_task(_write_events(ws, session, clocks), name=f"ws-writer-{session.id}")
    try:
        await _read_commands(ws, session, request, clocks)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await session.close()
        if not ws.closed:
            await ws.close(code=WS_NORMAL)
    return ws


async def _read_commands(ws: web.WebSocketResponse, session: SynthesisSession, request: web.Request,
                         clocks: dict[str, deque[PlayClock]]) -> None:
    settings = session.settings
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            if len(msg.data) > settings.max_message_bytes:
                await _close(ws, MessageTooLarge(f"messages are limited to {settings.max_message_bytes} bytes"))
                return
            cmd: m.Command | None = None
            try:
                cmd = m.parse(msg.data)
                await _apply(ws, session, cmd, request, clocks)
            except TTSError as e:
                if e.ws_close is not None:
                    await _close(ws, e)
                    return
                await _send_error(ws, e.details.get("context_id") or getattr(cmd, "context_id", None), e)
            except Exception:
                # aiohttp drops whatever a WebSocket handler raises after the upgrade without a word: the
                # client saw a bare 1000 and the log nothing. Say it in both places instead.
                log.exception("native_command_failed", session_id=session.id, command=type(cmd).__name__)
                await _close(ws, InternalError("the gateway failed on this message; see its log"),
                             code=WS_INTERNAL_ERROR)
                return
        elif msg.type == WSMsgType.BINARY:
            await _close(ws, BinaryNotAccepted("send JSON text frames; audio flows only from the server"))
            return
        elif msg.type == WSMsgType.ERROR:
            exc = ws.exception()
            code = getattr(exc, "code", None)
            if code == WS_MESSAGE_TOO_BIG:
                await _close(ws, MessageTooLarge("message exceeds the size limit"))
            return


async def _apply(ws: web.WebSocketResponse, session: SynthesisSession, cmd: m.Command,
                 request: web.Request, clocks: dict[str, deque[PlayClock]]) -> None:
    if isinstance(cmd, m.Text):
        await session.send_text(cmd.context_id, cmd.text, cmd.flush)
    elif isinstance(cmd, m.Start):
        req = await build_request(session.services.catalog, context_id=cmd.context_id, voice=cmd.voice,
                                  model=cmd.model, fmt=cmd.format, voice_settings=cmd.voice_settings,
                                  options=cmd.options, text=cmd.text, input_closed=cmd.end,
                                  use_cache=cmd.cache)
        clock = PlayClock(req.fmt)
        clocks.setdefault(cmd.context_id, deque()).append(clock)
        try:
            ctx = await session.start(req)
        except BaseException:
            _drop_clock(clocks, cmd.context_id, clock)
            raise
        fmt = req.fmt
        await ws.send_json({"type": "started", "context_id": cmd.context_id, "voice": req.voice_id,
                            "provider": req.provider, "format": fmt.name, "sample_rate": fmt.sample_rate,
                            "encoding": fmt.codec, "job_id": ctx.job_id})
        if cmd.flush and not cmd.end:
            await session.send_text(cmd.context_id, "", flush=True)
    elif isinstance(cmd, m.Flush):
        await session.send_text(cmd.context_id, "", flush=True)
    elif isinstance(cmd, m.End):
        await session.end_input(cmd.context_id)
    elif isinstance(cmd, m.CancelCmd):
        await session.cancel(cmd.context_id)
    elif isinstance(cmd, m.Ping):
        await ws.send_json({"type": "pong", "id": cmd.id})


async def _write_events(ws: web.WebSocketResponse, session: SynthesisSession,
                        clocks: dict[str, deque[PlayClock]]) -> None:
    ids: dict[str, bytes] = {}
    try:
        while not ws.closed:
            event = await session.next_event()
            if isinstance(event, AudioEvent):
                cid = ids.get(event.context_id)
                if cid is None:
                    cid = ids[event.context_id] = event.context_id.encode("ascii")
                pending = clocks.get(event.context_id)
                offset_s = pending[0].advance(event.audio) if pending else 0.0
                await ws.send_bytes(encode_audio_frame(cid, event.seq, event.audio))
                if event.alignment is not None:
                    # Times stay chunk-relative (as ElevenLabs sends them); offset_ms says where the chunk
                    # starts in the context's audio, so offset_ms + charStartTimesMs never resets.
                    await ws.send_json({"type": "alignment", "context_id": event.context_id, "seq": event.seq,
                                        "offset_ms": round(offset_s * 1000, 1), **event.alignment})
            elif isinstance(event, FinalEvent):
                ids.pop(event.context_id, None)
                _drop_clock(clocks, event.context_id)
                await ws.send_json(_final_json(event))
            elif isinstance(event, ErrorEvent):
                ids.pop(event.context_id or "", None)
                _drop_clock(clocks, event.context_id or "")
                await _send_error(ws, event.context_id, event.error, count=False)
            elif isinstance(event, SessionClosing):
                await _close(ws, event.error)
                return
    except (ConnectionError, RuntimeError) as e:  # aiohttp raises a bare ConnectionError on a lost peer
        log.debug("ws_writer_stopped", session_id=session.id, error=type(e).__name__)


def _drop_clock(clocks: dict[str, deque[PlayClock]], context_id: str, clock: PlayClock | None = None) -> None:
    """Forget a context's clock: ``clock`` (a start that failed) or the oldest (the context ended)."""
    pending = clocks.get(context_id)
    if not pending:
        return
    if clock is None:
        pending.popleft()
    elif clock in pending:
        pending.remove(clock)
    if not pending:
        del clocks[context_id]


def _final_json(e: FinalEvent) -> dict[str, Any]:
    return {"type": "final", "context_id": e.context_id, "reason": e.reason, "chunks": e.chunks,
            "audio_bytes": e.audio_bytes, "characters": e.characters,
            "ttfa_ms": None if e.ttfa_ms is None else round(e.ttfa_ms, 2),
            "duration_ms": round(e.duration_ms, 2), "cached": e.cached,
            **(e.usage.to_json() if e.usage is not None else {})}  # usage metering (gateway/metering.py)


async def _send_error(ws: web.WebSocketResponse, context_id: str | None, error: TTSError,
                      count: bool = True) -> None:
    body: dict[str, Any] = {"type": "error", "context_id": context_id, **error.to_dict()}
    body.get("details", {}).pop("context_id", None)
    if not body.get("details"):
        body.pop("details", None)
    if count:  # context failures were counted when the session ended the context
        metrics.CLIENT_ERRORS.labels(error.code).inc()
    if not ws.closed:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_json(body)


async def _close(ws: web.WebSocketResponse, error: TTSError, code: int | None = None) -> None:
    """Tell the client why, then close with the error's code."""
    await _send_error(ws, error.details.get("context_id"), error)
    close_code = code or error.ws_close or WS_GOING_AWAY
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.close(code=close_code, message=error.code.encode())


async def _shed(ws: web.WebSocketResponse, request: web.Request) -> None:
    """Close a client that stopped reading with 4408, but never wait on its full pipe for long.

    Sending the error and the close frame both wait for the client to drain what is already queued;
    a client that reads nothing would hold the session (and its upstream contexts) open for ever.
    After the grace the transport is aborted, which ends the session and cancels its contexts.
    """
    closing = asyncio.ensure_future(_close(ws, SlowConsumer("client is not reading audio fast enough")))
    done, _ = await asyncio.wait({closing}, timeout=SHED_GRACE_S)
    if not done:
        closing.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await closing
        if request.transport is not None:
            request.transport.abort()

