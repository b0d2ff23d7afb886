"""The native WebSocket endpoint: JSON control and events, binary audio frames (see frames.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import Any

import orjson
from aiohttp import web

from gateway.appkeys import SERVICES
from gateway.auth.guard import authenticate
from gateway.ctxtrace import ContextTrace, mark_sent, request_carrier
from gateway.events import AudioEvent, ErrorEvent, FinalEvent, SessionClosing
from gateway.http_errors import error_response
from gateway.native import messages as m
from gateway.native.frames import encode_audio_frame
from gateway.requests import build_request
from gateway.session import SynthesisSession
from gateway.wsedge import ClientSocket, ErrorWire, prepare, receive_text
from shared.audio.clock import PlayClock
from shared.errors import WS_GOING_AWAY, WS_INTERNAL_ERROR, WS_NORMAL, InternalError, TTSError
from shared.logging import get_logger

log = get_logger(__name__)
PROTOCOL_VERSION = 1


def _error_frame(error: TTSError, context_id: str | None, _close_code: int | None) -> str:
    body: dict[str, Any] = {"type": "error", "context_id": context_id or error.details.get("context_id"),
                            **error.to_dict()}
    body.get("details", {}).pop("context_id", None)
    if not body.get("details"):
        body.pop("details", None)
    return json.dumps(body)


WIRE = ErrorWire(frame=_error_frame, close_code=lambda e: e.ws_close or WS_GOING_AWAY,
                 close_reason=lambda reason: reason.encode())


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
    # Text frames arrive undecoded: aiohttp would drop a non-UTF-8 frame's connection with a bare 1007
    # (and a reset if more frames followed); the parser answers it with invalid_json instead.
    ws = prepare(settings, decode_text=False)
    await ws.prepare(request)
    sock = ClientSocket(ws, request, WIRE)
    session = SynthesisSession(services, api="native", tenant=principal.key_id)
    session.on_overflow = sock.shed
    try:
        await session.open()
    except TTSError as e:
        await sock.fail(e, code=WS_INTERNAL_ERROR)
        return ws
    try:
        await _send_json(ws, {"type": "session", "session_id": session.id, "protocol": PROTOCOL_VERSION})
    except ConnectionError:  # the client hung up right after the upgrade: nothing to serve
        await session.close()
        return ws
    # Per started context (oldest first per id, so a reused id never takes an older one's clock): where its
    # next chunk starts. Registered at start, before any audio can be queued; dropped at its final/error.
    clocks: dict[str, deque[PlayClock]] = {}
    writer = asyncio.create_task(_write_events(sock, session, clocks), name=f"ws-writer-{session.id}")
    try:
        await _read_commands(sock, session, clocks, request_carrier(request))
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await session.close()
        if not ws.closed:
            await ws.close(code=WS_NORMAL)
    return ws


async def _read_commands(sock: ClientSocket, session: SynthesisSession,
                         clocks: dict[str, deque[PlayClock]], trace_parent: dict[str, str]) -> None:
    limit = session.settings.max_message_bytes
    while True:
        try:
            data = await receive_text(sock.ws, limit)
        except TTSError as e:
            await sock.fail(e)
            return
        if data is None:
            return
        cmd: m.Command | None = None
        try:
            cmd = m.parse(data)
            await _apply(sock.ws, session, cmd, clocks, trace_parent)
        except TTSError as e:
            if e.ws_close is not None:
                await sock.fail(e)
                return
            await sock.report(e, e.details.get("context_id") or getattr(cmd, "context_id", None))
        except Exception:
            # aiohttp drops whatever a WebSocket handler raises after the upgrade without a word: the
            # client saw a bare 1000 and the log nothing. Say it in both places instead.
            log.exception("native_command_failed", session_id=session.id, command=type(cmd).__name__)
            await sock.fail(InternalError("the gateway failed on this message; see its log"),
                            code=WS_INTERNAL_ERROR)
            return


async def _apply(ws: web.WebSocketResponse, session: SynthesisSession, cmd: m.Command,
                 clocks: dict[str, deque[PlayClock]], trace_parent: dict[str, str]) -> None:
    if isinstance(cmd, m.Text):
        await session.send_text(cmd.context_id, cmd.text, cmd.flush)
    elif isinstance(cmd, m.Start):
        req = await build_request(session.services.catalog, context_id=cmd.context_id, voice=cmd.voice,
                                  model=cmd.model, fmt=cmd.format, voice_settings=cmd.voice_settings,
                                  options=cmd.options, text=cmd.text, input_closed=cmd.end,
                                  use_cache=cmd.cache,
                                  # the start message's own traceparent wins over the upgrade's header
                                  trace_parent=cmd.trace_parent or trace_parent)
        clock = PlayClock(req.fmt)
        clocks.setdefault(cmd.context_id, deque()).append(clock)
        try:
            ctx = await session.start(req)
        except BaseException:
            _drop_clock(clocks, cmd.context_id, clock)
            raise
        fmt = req.fmt
        await _send_json(ws, {"type": "started", "context_id": cmd.context_id, "voice": req.voice_id,
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
        await _send_json(ws, {"type": "pong", "id": cmd.id})


async def _write_events(sock: ClientSocket, session: SynthesisSession,
                        clocks: dict[str, deque[PlayClock]]) -> None:
    ws = sock.ws
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
                mark_sent(event)
                if event.alignment is not None:
                    # Times stay chunk-relative (as ElevenLabs sends them); offset_ms says where the chunk
                    # starts in the context's audio, so offset_ms + charStartTimesMs never resets.
                    await _send_json(ws, {"type": "alignment", "context_id": event.context_id, "seq": event.seq,
                                        "offset_ms": round(offset_s * 1000, 1), **event.alignment})
            elif isinstance(event, FinalEvent):
                ids.pop(event.context_id, None)
                _drop_clock(clocks, event.context_id)
                await _send_json(ws, _final_json(event))
            elif isinstance(event, ErrorEvent):
                ids.pop(event.context_id or "", None)
                _drop_clock(clocks, event.context_id or "")
                await sock.report(event.error, event.context_id)
            elif isinstance(event, SessionClosing):
                await sock.fail(event.error)
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


async def _send_json(ws: web.WebSocketResponse, event: dict[str, Any]) -> None:
    """One JSON event as a text frame, encoded with orjson: an ``alignment`` event goes out with every
    audio chunk, and orjson encodes one in 0.7 us where the stdlib took 9 (and a final in 0.8 vs 7.8).
    Compact separators and UTF-8 instead of ``\\u`` escapes: the same JSON to any parser."""
    await ws.send_str(orjson.dumps(event).decode())


def _final_json(e: FinalEvent) -> dict[str, Any]:
    return {"type": "final", "context_id": e.context_id, "reason": e.reason, "chunks": e.chunks,
            "audio_bytes": e.audio_bytes, "characters": e.characters,
            "ttfa_ms": None if e.ttfa_ms is None else round(e.ttfa_ms, 2),
            "duration_ms": round(e.duration_ms, 2), "cached": e.cached,
            **(e.usage.to_json() if e.usage is not None else {}),  # usage metering (gateway/metering.py)
            **(_trace_json(e.trace) if e.trace is not None else {}),
            **({"failover": e.failover} if e.failover else {})}


def _trace_json(trace: ContextTrace) -> dict[str, Any]:
    """Where the context spent its time (ms per hop, shared/hops.py) and its trace id when it has one."""
    body: dict[str, Any] = {"timings": trace.timings()}
    trace_id = trace.trace_id
    if trace_id is not None:
        body["trace_id"] = trace_id
    return body
