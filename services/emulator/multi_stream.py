"""``/v1/text-to-speech/{voice_id}/multi-stream-input``: up to N concurrent contexts on one socket."""

from __future__ import annotations

from typing import Any, ClassVar

from aiohttp import web

from emulator.buffering import ScheduleError, TextBuffer, parse_schedule
from emulator.context import Context
from emulator.protocol import (
    ProtocolViolation,
    final_frame,
    max_contexts_message,
    normalize_voice_settings,
)
from emulator.state import STATE_KEY
from emulator.ws_session import WsSession

# Messages without ``context_id`` address this context; whether the real default context counts toward
# the cap is unconfirmed, so here it does once it exists (a bare keep-alive does not create it).
DEFAULT_CONTEXT_ID = "default"


def generation_config_of(data: dict[str, Any]) -> Any:
    """The chunk schedule's container, under either spelling the spec uses."""
    return data.get("generation_config", data.get("generator_config"))


class MultiStreamSession(WsSession):
    """Routes messages to contexts by ``context_id``; enforces the cap, voice settings and timeouts."""

    endpoint: ClassVar[str] = "multi-stream-input"

    def __init__(self, request: web.Request, state: Any) -> None:
        """Start with no contexts."""
        super().__init__(request, state)
        self._contexts: dict[str, Context] = {}
        self._closing_socket = False

    @property
    def live_contexts(self) -> int:
        """Contexts whose final has not been sent yet (each holds a slot)."""
        return len(self._contexts)

    def contexts(self) -> list[Context]:
        """Every context still holding a slot."""
        return list(self._contexts.values())

    def on_session_end(self) -> None:
        """Contexts die with their socket: release their share of the active gauge."""
        self.stats.contexts_active -= len(self._contexts)
        self._contexts.clear()

    def handle_message(self, data: dict[str, Any]) -> None:
        """Apply one client message to the context it names (creating it if unknown)."""
        if data.get("close_socket") is True:
            self.count("close_socket")
            self._close_all()
            return
        if self._closing_socket:
            self.count("ignored")  # input after close_socket is not accepted
            return
        raw_id = data.get("context_id", data.get("contextId"))
        text = data.get("text")
        if raw_id is not None and not isinstance(raw_id, str):
            raise ProtocolViolation("invalid_input_message", "context_id must be a string.")
        if text is not None and not isinstance(text, str):
            raise ProtocolViolation("invalid_input_message", "text must be a string.")
        flush = data.get("flush") is True
        close = data.get("close_context") is True
        context_id = raw_id if raw_id is not None else DEFAULT_CONTEXT_ID
        context = self._contexts.get(context_id)
        first = context is None
        if context is None:
            if raw_id is None and not text and not flush and not close:
                self.count("keep_alive")  # connection keep-alive (pipecat): resets only the socket's timer
                return
            context = self._open(context_id, data)
        elif context.closing:
            self.count("ignored")  # text for a draining context is dropped, it is not a new context
            return
        else:
            context.check_voice_settings(data.get("voice_settings"))
        context.touch()
        if text == "":
            self.count("keep_alive")
        elif text == " " and first:
            self.count("init")
        elif text is not None:
            self.count("text")
            context.add_text(text)
        if data.get("try_trigger_generation") is True:
            context.try_trigger()
        if flush:
            self.count("flush")
            context.flush()
        if close:
            self.count("close_context")
            context.close()

    def _open(self, context_id: str, data: dict[str, Any]) -> Context:
        # Any message naming an unknown id creates the context, fixing its voice settings (pipecat #4520).
        if len(self._contexts) >= self.config.max_contexts_per_socket:
            self.stats.context_cap_rejections += 1
            raise ProtocolViolation(
                "max_active_conversations", max_contexts_message(self.config.max_contexts_per_socket)
            )
        try:
            schedule = parse_schedule(generation_config_of(data))
        except ScheduleError as e:
            raise ProtocolViolation("invalid_input_message", str(e)) from e
        voice = normalize_voice_settings(data.get("voice_settings"))
        context = Context(self, context_id, voice, TextBuffer(schedule, self.params.auto_mode))
        self._contexts[context_id] = context
        self.stats.contexts_opened += 1
        self.stats.contexts_active += 1
        self.stats.observe_socket_contexts(len(self._contexts))
        return context

    def _close_all(self) -> None:
        # Contexts already under way finish and send their finals; then the socket closes normally.
        self._closing_socket = True
        for context in list(self._contexts.values()):
            context.close()
        if not self._contexts:
            self.finish(1000)

    async def finish_context(self, context: Context) -> None:
        """Send the final; the slot is released at the moment the final is written, not before."""

        def release() -> None:
            if self._contexts.get(context.id or "") is context:
                del self._contexts[context.id or ""]
                self.stats.contexts_active -= 1
                self.last_activity = self._loop.time()  # an empty socket's idle clock starts now

        await self.send_json(final_frame(context.id), before_write=release)
        self.stats.finals_sent += 1
        if self._closing_socket and not self._contexts:
            self.finish(1000)

    def inactivity_deadline(self) -> float | None:
        """The earliest idle context's deadline; with no contexts, the socket's own idle deadline."""
        timeout = self.params.inactivity_timeout_s
        if not self._contexts:
            return None if self._closing_socket else self.last_activity + timeout
        deadlines = [d for c in self._contexts.values() if (d := c.inactivity_deadline(timeout)) is not None]
        return min(deadlines, default=None)


async def multi_stream_handler(request: web.Request) -> web.StreamResponse:
    """aiohttp handler for the multi-context WebSocket."""
    return await MultiStreamSession(request, request.app[STATE_KEY]).serve()
