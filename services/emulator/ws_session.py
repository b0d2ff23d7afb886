"""What both TTS WebSockets share: handshake, auth, serialized sends, faults, inactivity and closing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from aiohttp import WSMsgType, web

from emulator.auth import key_accepted, key_from_message, key_from_request
from emulator.config import EmulatorConfig
from emulator.context import Context, SessionClosing
from emulator.faults import SocketFaults
from emulator.limits import (
    SYSTEM_BUSY,
    SYSTEM_BUSY_MESSAGE,
    TOO_MANY_CONCURRENT,
    retry_after,
    too_many_concurrent_message,
)
from emulator.protocol import (
    INVALID_API_KEY_MESSAGE,
    MISSING_API_KEY_MESSAGE,
    ProtocolViolation,
    WsParams,
    close_reason,
    error_frame,
    inactivity_message,
    voice_not_found_message,
)
from emulator.state import EmulatorState

log = logging.getLogger(__name__)

MAX_CLIENT_MESSAGE = 16 * 1024 * 1024
CLOSE_HANDSHAKE_TIMEOUT_S = 2.0  # how long a close waits for the client's close frame
_GARBAGE_FRAME = '{"audio": "UklGRg==", "isFinal": nul'  # truncated JSON: what a broken proxy might pass on
_WATCHDOG_MAX_SLEEP_S = 5.0


class WsSession:
    """One client socket; subclasses implement :meth:`handle_message` and the inactivity deadline."""

    endpoint: ClassVar[str] = ""

    def __init__(self, request: web.Request, state: EmulatorState) -> None:
        """Serve ``request`` (not yet upgraded) with the shared ``state``."""
        self.request = request
        self.state = state
        self.stats = state.stats
        self.voice_id = request.match_info["voice_id"]
        self.params: WsParams
        self.ws = web.WebSocketResponse(
            max_msg_size=MAX_CLIENT_MESSAGE, compress=False, timeout=CLOSE_HANDSHAKE_TIMEOUT_S
        )
        self.faults = SocketFaults(lambda: state.config, state.fault_budget, state.stats)
        self._loop = asyncio.get_running_loop()
        self._send_lock = asyncio.Lock()
        self._done = asyncio.Event()
        self._closing = False  # no more frames may be sent
        self._stalled = False
        self._dropped = False
        self._authenticated = False
        self._close: tuple[int, str, dict[str, Any] | None] | None = None
        self.last_activity = self._loop.time()

    @property
    def config(self) -> EmulatorConfig:
        """The emulator config in force now."""
        return self.state.config

    @property
    def live_contexts(self) -> int:
        """Contexts whose final has not been sent yet."""
        return 0

    # ---- lifecycle ------------------------------------------------------------------------------------
    async def serve(self) -> web.StreamResponse:
        """Complete the handshake, run the session to its end, and close the socket."""
        # Arrivals are counted, as an edge rate limiter does; the refusal still costs the set-up time.
        refused = self.state.handshakes.admit(self._loop.time(), self.config)
        if self.config.connect_delay_ms:
            await asyncio.sleep(self.config.connect_delay_ms / 1000.0)
        if refused is not None:
            self.stats.handshakes_refused += 1
            if self.config.handshake_refusal == "http_429":
                return web.json_response(
                    {"detail": {"status": SYSTEM_BUSY, "message": SYSTEM_BUSY_MESSAGE}},
                    status=429,
                    headers={"Retry-After": retry_after(refused)},
                )
        await self.ws.prepare(self.request)
        self.stats.ws_connections_opened += 1
        self.stats.ws_connections_active += 1
        self.stats.ws_connections_by_endpoint[self.endpoint] += 1
        self.state.sessions.add(self)
        tasks: list[asyncio.Task[Any]] = []
        try:
            if refused is not None:
                self.fail(ProtocolViolation(SYSTEM_BUSY, SYSTEM_BUSY_MESSAGE))
            elif self._check_handshake():
                tasks += [
                    asyncio.create_task(self._read_loop(), name="emulator-ws-read"),
                    asyncio.create_task(self._watchdog(), name="emulator-ws-watchdog"),
                ]
                await self._done.wait()
            self._closing = True
            await self._cancel(tasks + [c.task for c in self.contexts()])
            await self._close_socket()
        finally:
            for task in tasks + [c.task for c in self.contexts()]:
                task.cancel()  # only matters if serve() itself was cancelled
            self.state.sessions.discard(self)
            self.stats.ws_connections_active -= 1
            self.on_session_end()
        return self.ws

    def _check_handshake(self) -> bool:
        try:
            self.params = WsParams.parse(self.request.query, self.config.inactivity_timeout_default)
            if self.voice_id in self.config.reject_voice_ids:
                raise ProtocolViolation("voice_not_found", voice_not_found_message(self.voice_id))
            presented = key_from_request(self.request)
            if presented is not None or self.config.api_key is None:
                # A key on the handshake is checked at once; without one, the first message may carry it.
                if not key_accepted(self.config.api_key, presented):
                    raise ProtocolViolation("invalid_api_key", INVALID_API_KEY_MESSAGE)
                self._authenticated = True
        except ProtocolViolation as e:
            self.fail(e)
            return False
        return True

    async def _cancel(self, tasks: list[asyncio.Task[Any]]) -> None:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("emulator session task failed", exc_info=result)

    async def _close_socket(self) -> None:
        if self._dropped or self.ws.closed or self._close is None:
            return
        code, reason, frame = self._close
        with contextlib.suppress(ConnectionError, RuntimeError):
            if frame is not None:
                await self.ws.send_str(json.dumps(frame))
                self.stats.errors_sent[frame["error"]] += 1
            self.stats.close_codes_sent[code] += 1
            await self.ws.close(code=code, message=close_reason(reason))

    def on_session_end(self) -> None:
        """Hook for subclasses to release per-socket accounting."""

    def contexts(self) -> list[Context]:
        """Every context still alive on this socket."""
        return []

    # ---- ending the session -----------------------------------------------------------------------------
    def fail(self, violation: ProtocolViolation) -> None:
        """End the socket with an error frame and ``violation.close_code``."""
        frame = error_frame(violation.error, violation.message, violation.close_code)
        self._request_close(violation.close_code, violation.message, frame)

    def finish(self, code: int = 1000, reason: str = "") -> None:
        """End the socket with a plain close frame (normal end, injected 1008, shutdown)."""
        self._request_close(code, reason, None)

    def _request_close(self, code: int, reason: str, frame: dict[str, Any] | None) -> None:
        if self._close is None and not self._dropped:
            self._close = (code, reason, frame)
        self._closing = True
        self._done.set()

    def shutdown(self) -> None:
        """End the socket because the server is stopping (1001 going away)."""
        self.finish(1001, "Server shutting down")

    def _drop(self) -> None:
        # Abort, not close: the client sees a dead TCP connection with no close frame (code 1006).
        self._dropped = True
        self._closing = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self._done.set()

    # ---- receiving --------------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self.stats.messages_received["invalid"] += 1
                    self.fail(ProtocolViolation("invalid_input_message", "Binary messages are not accepted."))
                if self._closing:
                    break
        except ConnectionError:
            pass
        self._done.set()  # client closed or the connection broke

    async def _on_text(self, raw: str) -> None:
        self.last_activity = self._loop.time()
        try:
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise ProtocolViolation(
                    "invalid_input_message", "Invalid message received: not a JSON object."
                )
            if not self._authenticated:
                if not key_accepted(self.config.api_key, key_from_message(data)):
                    has_key = key_from_message(data) is not None
                    raise ProtocolViolation(
                        "invalid_api_key", INVALID_API_KEY_MESSAGE if has_key else MISSING_API_KEY_MESSAGE
                    )
                self._authenticated = True
            self.handle_message(data)
        except ProtocolViolation as e:
            self.stats.messages_received["invalid"] += 1
            self.fail(e)

    def handle_message(self, data: dict[str, Any]) -> None:
        """Apply one client JSON message (raise :class:`ProtocolViolation` to end the socket)."""
        raise NotImplementedError

    def count(self, kind: str) -> None:
        """Count a received message by type for the stats."""
        self.stats.messages_received[kind] += 1

    # ---- inactivity ---------------------------------------------------------------------------------------
    def inactivity_deadline(self) -> float | None:
        """Loop time at which the socket times out, or None while nothing can time out."""
        raise NotImplementedError

    async def _watchdog(self) -> None:
        # Sleeps until the deadline rather than polling: a thousand idle sockets polled every 50 ms
        # were the emulator's largest fixed cost. A deadline only ever moves later (activity) or
        # appears a full timeout after the moment it was None (a generation ended, a context was
        # released), so sleeping that long never misses one; the cap is a safety net.
        timeout = self.params.inactivity_timeout_s
        while not self._closing:
            deadline = self.inactivity_deadline()
            now = self._loop.time()
            if deadline is None or self._stalled:
                wait = timeout
            elif now >= deadline:
                self.fail(ProtocolViolation("input_timeout_exceeded", inactivity_message(timeout)))
                return
            else:
                wait = deadline - now
            await asyncio.sleep(min(_WATCHDOG_MAX_SLEEP_S, max(0.001, wait)))

    # ---- sending ------------------------------------------------------------------------------------------
    async def send_json(self, frame: dict[str, Any], before_write: Callable[[], None] | None = None) -> None:
        """Send one frame in order with every other sender; raise SessionClosing once the socket ends."""
        await self.send_text(json.dumps(frame), before_write)

    async def send_text(self, text: str | bytes, before_write: Callable[[], None] | None = None) -> None:
        """Send one JSON text frame, already serialized (see :meth:`send_json`); bytes are its UTF-8."""
        await self._wait_if_stalled()
        if self._closing:
            raise SessionClosing
        async with self._send_lock:
            if self._closing:
                raise SessionClosing
            if before_write is not None:
                # Runs with no await before the write: state changes (a freed slot) and the frame that
                # announces them reach the client atomically.
                before_write()
            try:
                if isinstance(text, bytes):
                    await self.ws.send_frame(text, WSMsgType.TEXT)
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError) as e:
                self._done.set()
                raise SessionClosing from e

    async def send_audio(self, frame: bytes, audio_bytes: int) -> None:
        """Send an audio chunk (a JSON text frame's UTF-8), firing any fault due before or after it."""
        # Without chunk faults the checks around the send find nothing to fire (the usual case, twice
        # per chunk); send_text still refuses a closing or stalled socket.
        faults = self.config.chunk_faults_set
        if faults:
            await self._apply_fault()
        await self.send_text(frame)
        self.faults.chunks_sent += 1
        self.stats.audio_chunks_sent += 1
        self.stats.audio_bytes_sent += audio_bytes
        if faults:
            await self._apply_fault()

    async def _apply_fault(self) -> None:
        fault = self.faults.due()
        if fault == "drop_after_chunks":
            self._drop()
        elif fault == "close_1008_after_chunks":
            self.finish(1008, self.config.close_reason)
        elif fault == "stall_after_chunks":
            self._stalled = True
        elif fault == "garbage_after_chunks":
            async with self._send_lock:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.send_str(_GARBAGE_FRAME)
        if self._closing:
            raise SessionClosing
        await self._wait_if_stalled()

    async def _wait_if_stalled(self) -> None:
        if self._stalled:
            await self._done.wait()  # a stalled socket sends nothing more, ever
            raise SessionClosing

    def begin_generation(self) -> bool:
        """Count a generation against ``max_concurrent_requests``; over it, refuse and end the socket."""
        limit = self.config.max_concurrent_requests
        if not self.state.concurrency.try_acquire(limit):
            assert limit is not None
            self.stats.concurrency_refusals["ws"] += 1
            self.fail(ProtocolViolation(TOO_MANY_CONCURRENT, too_many_concurrent_message(limit)))
            return False
        self.stats.max_concurrent_requests_seen = max(
            self.stats.max_concurrent_requests_seen, self.state.concurrency.active
        )
        return True

    def end_generation(self) -> None:
        """Release the slot :meth:`begin_generation` took."""
        self.state.concurrency.release()

    async def finish_context(self, context: Context) -> None:
        """Send ``context``'s final message (subclasses add slot accounting)."""
        raise NotImplementedError
