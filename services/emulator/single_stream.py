"""``/v1/text-to-speech/{voice_id}/stream-input``: one context per socket, ended by EOS ``{"text": ""}``."""

from __future__ import annotations

from typing import Any, ClassVar

from aiohttp import web

from emulator.buffering import ScheduleError, TextBuffer, parse_schedule
from emulator.context import Context
from emulator.multi_stream import generation_config_of
from emulator.protocol import ProtocolViolation, final_frame, normalize_voice_settings
from emulator.state import STATE_KEY
from emulator.ws_session import WsSession


class SingleStreamSession(WsSession):
    """BOS, text, flush and keep-alive, then EOS: remaining audio, ``isFinal``, close 1000."""

    endpoint: ClassVar[str] = "stream-input"

    def __init__(self, request: web.Request, state: Any) -> None:
        """Start before BOS."""
        super().__init__(request, state)
        self._context: Context | None = None
        self._eos = False

    @property
    def live_contexts(self) -> int:
        """1 from BOS until the final has been sent."""
        return 1 if self._context is not None else 0

    def contexts(self) -> list[Context]:
        """The socket's one context, if it is still alive."""
        return [self._context] if self._context is not None else []

    def on_session_end(self) -> None:
        """Release the active-context gauge if the socket died before its final."""
        if self._context is not None:
            self.stats.contexts_active -= 1
            self._context = None

    def handle_message(self, data: dict[str, Any]) -> None:
        """Apply BOS / text / flush / keep-alive / EOS."""
        if self._eos:
            self.count("ignored")  # nothing is accepted after EOS (livekit/agents #306)
            return
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise ProtocolViolation("invalid_input_message", "text must be a string.")
        context = self._context
        if context is None:
            context = self._begin(data)
            if text == " ":
                return
        else:
            context.check_voice_settings(data.get("voice_settings"))
        context.touch()
        if text == "":
            self.count("eos")
            self._eos = True
            context.close()
            return
        if text == " ":
            self.count("keep_alive")
        elif text is not None:
            self.count("text")
            context.add_text(text)
        if data.get("try_trigger_generation") is True:
            context.try_trigger()
        if data.get("flush") is True:
            self.count("flush")
            context.flush()

    def _begin(self, data: dict[str, Any]) -> Context:
        # The first message is BOS; one carrying real text is taken as BOS plus that text (lenient).
        self.count("bos")
        try:
            schedule = parse_schedule(generation_config_of(data))
        except ScheduleError as e:
            raise ProtocolViolation("invalid_input_message", str(e)) from e
        voice = normalize_voice_settings(data.get("voice_settings"))
        self._context = Context(self, None, voice, TextBuffer(schedule, self.params.auto_mode))
        self.stats.contexts_opened += 1
        self.stats.contexts_active += 1
        self.stats.observe_socket_contexts(1)
        return self._context

    async def finish_context(self, context: Context) -> None:
        """Send ``{"isFinal": true}`` and close the socket normally."""

        def release() -> None:
            self._context = None
            self.stats.contexts_active -= 1

        await self.send_json(final_frame(), before_write=release)
        self.stats.finals_sent += 1
        self.finish(1000)

    def inactivity_deadline(self) -> float | None:
        """Idle since the last message (or since the last audio went out), unless draining or generating."""
        timeout = self.params.inactivity_timeout_s
        if self._context is None:
            return None if self._eos else self.last_activity + timeout
        return self._context.inactivity_deadline(timeout)


async def single_stream_handler(request: web.Request) -> web.StreamResponse:
    """aiohttp handler for the single-context WebSocket."""
    return await SingleStreamSession(request, request.app[STATE_KEY]).serve()
