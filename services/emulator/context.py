"""One synthesis context: its text buffer, its ordered generations and its final message."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from emulator.buffering import TextBuffer
from emulator.config import EmulatorConfig
from emulator.generation import paced_chunks
from emulator.protocol import (
    VOICE_SETTINGS_MESSAGE,
    ProtocolViolation,
    VoiceSettings,
    WsParams,
    audio_frame,
    normalize_voice_settings,
)
from emulator.speech import ws_alignment
from emulator.stats import Stats


class SessionClosing(Exception):
    """The socket is going away (close requested, fault fired): stop producing quietly."""


class ContextHost(Protocol):
    """What a context needs from the socket that owns it."""

    params: WsParams
    stats: Stats

    @property
    def config(self) -> EmulatorConfig:
        """The emulator config in force now."""

    async def send_audio(self, frame: bytes, audio_bytes: int) -> None:
        """Send one audio frame, the UTF-8 of its JSON text (fault injection happens here)."""

    async def finish_context(self, context: Context) -> None:
        """Send the context's final message and release it."""

    def begin_generation(self) -> bool:
        """Take one of the account's concurrent-request slots; False = refused (the socket is ending)."""

    def end_generation(self) -> None:
        """Give the slot back."""


_END = None  # queue marker: no more generations, send the final
_MAX_WHOLE_ALIGNMENT_CHARS = 2000


class Context:
    """A context's state machine: OPEN -> (close) DRAINING -> final sent; generations run in order."""

    def __init__(
        self,
        host: ContextHost,
        context_id: str | None,
        voice_settings: VoiceSettings | None,
        buffer: TextBuffer,
    ) -> None:
        """``context_id`` None means stream-input (frames carry no ``contextId``)."""
        self.id = context_id
        self.voice_settings = voice_settings
        self.buffer = buffer
        self.closing = False
        self._host = host
        self._loop = asyncio.get_running_loop()
        self.last_activity = self._loop.time()
        self._queue: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()
        self._busy = False
        self.task = asyncio.create_task(self._run(), name=f"emulator-context-{context_id}")

    def touch(self) -> None:
        """Note client activity for the inactivity timeout."""
        self.last_activity = self._loop.time()

    def check_voice_settings(self, value: Any) -> None:
        """Allow a repeat of the first message's voice_settings; any other value ends the socket."""
        if value is None:
            return
        if normalize_voice_settings(value) != self.voice_settings:
            raise ProtocolViolation("invalid_input_message", VOICE_SETTINGS_MESSAGE)

    def add_text(self, text: str) -> None:
        """Buffer text, starting the generations the schedule says are due."""
        self._enqueue(self.buffer.add(text))

    def try_trigger(self) -> None:
        """Generate early if the buffer is long enough."""
        self._enqueue(self.buffer.try_trigger())

    def flush(self) -> None:
        """Generate everything buffered; the context stays open."""
        self._enqueue(self.buffer.flush())

    def close(self) -> None:
        """Flush, then send the final once every generation has been sent; idempotent."""
        if self.closing:
            return
        self.flush()
        self.closing = True
        self._queue.put_nowait(_END)

    def inactivity_deadline(self, timeout_s: float) -> float | None:
        """When this context times out, or None while it is draining or generating audio."""
        # A context busy producing audio is not idle: a long text at real-time pace would otherwise
        # time out while the client is, correctly, just listening.
        if self.closing or self._busy or not self._queue.empty():
            return None
        return self.last_activity + timeout_s

    def _enqueue(self, segments: list[str]) -> None:
        now = self._loop.time()
        for segment in segments:
            self._queue.put_nowait((segment, now))

    async def _run(self) -> None:
        try:
            while (item := await self._queue.get()) is not _END:
                self._busy = True
                if not self._host.begin_generation():
                    raise SessionClosing
                try:
                    await self._generate(*item)
                finally:
                    self._host.end_generation()
                self._busy = False
                self.touch()  # the idle clock restarts when the audio has been delivered
            await self._host.finish_context(self)
        except SessionClosing:
            pass

    async def _generate(self, text: str, triggered_at: float) -> None:
        host = self._host
        params = host.params
        host.stats.characters_synthesized += len(text)
        first = True
        async for chunk in paced_chunks(text, params.output_format, host.config, triggered_at):
            if params.sync_alignment:
                alignment = chunk.ws_alignment()
            elif first:
                # Without sync_alignment the real service sends timing for the whole generation on its
                # first chunk and null after it (elevenlabs-python #689): clients must cope with both.
                # A huge flushed generation gets the chunk's own timing instead, keeping frames small.
                whole = len(text) <= _MAX_WHOLE_ALIGNMENT_CHARS
                alignment = ws_alignment(
                    text if whole else chunk.text, chunk.samples_per_char, chunk.sample_rate
                )
            else:
                alignment = None
            first = False
            await host.send_audio(audio_frame(chunk.base64(), alignment, self.id), len(chunk.audio))
