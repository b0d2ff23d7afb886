"""The one small interface every synthesis provider implements, so a job never knows which it talks to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.errors import TTSError


@dataclass(frozen=True, slots=True)
class SynthesisRequest:
    """One utterance (context) to synthesize, as the provider needs it."""

    key: str  # unique per job attempt; providers use it as their upstream context id
    voice_id: str
    model_id: str
    output_format: str  # a name from shared.audio.formats, e.g. "pcm_24000"
    voice_settings: dict[str, Any] = field(default_factory=dict)
    # chunk_length_schedule, auto_mode, sync_alignment, language_code, apply_text_normalization, seed, speed
    options: dict[str, Any] = field(default_factory=dict)
    tenant: str = ""  # the client key id (opaque), for per-tenant fairness over upstream permits


@dataclass(slots=True)
class AudioChunk:
    """Audio in the request's output format, sample-aligned, with optional alignment for its text.

    ``alignment`` uses ElevenLabs' shape: ``{"chars": [...], "charStartTimesMs": [...],
    "charDurationsMs": [...]}`` with times relative to the start of this chunk.
    """

    audio: bytes
    alignment: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Voice:
    """A voice a provider offers, as listed in the catalogue."""

    voice_id: str
    name: str
    provider: str
    language: str = "en"
    description: str = ""
    default_model: str = ""
    sample_rate: int = 0
    labels: dict[str, str] = field(default_factory=dict)


class SynthesisStream(Protocol):
    """A running context: push text in, iterate audio out.

    Iteration yields chunks until the provider's final, then stops; a failure raises a
    :class:`~shared.errors.TTSError` (``upstream_*``), carrying ``audio_sent`` implicitly by
    whether chunks were yielded. After :meth:`cancel`, iteration stops promptly and no further
    chunk is yielded.
    """

    async def send_text(self, text: str, flush: bool = False) -> None:
        """Append text; ``flush`` forces generation of everything buffered."""

    async def end_input(self) -> None:
        """No more text: synthesize the rest, then finish."""

    async def cancel(self) -> None:
        """Stop now (idempotent); upstream resources are released."""

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        """Audio chunks in order."""
        ...


class Provider(Protocol):
    """A source of speech: the ElevenLabs pool, the local Piper voice."""

    name: str

    async def start(self) -> None:
        """Load models / prewarm connections; called once at worker start."""

    async def close(self) -> None:
        """Release everything; in-flight streams end with an error."""

    async def open_stream(self, request: SynthesisRequest) -> SynthesisStream:
        """Begin a context; may wait for capacity and raise UpstreamBusy/UnknownVoice/UnsupportedFormat."""
        ...

    def voices(self) -> list[Voice]:
        """The voices this provider serves."""
        ...

    def status(self) -> dict[str, Any]:
        """Small JSON-able state for /admin/status and readiness (pool sizes, model loaded, ...)."""
        ...


_END = object()


class ChunkQueue:
    """Output side shared by providers: an async iterator fed by the provider's own tasks.

    ``put`` after ``close``/``fail`` is ignored, so late audio for a cancelled context is dropped here.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the stream ended, failed or was cancelled."""
        return self._closed

    def put(self, chunk: AudioChunk) -> None:
        """Queue a chunk unless the stream is already over."""
        if not self._closed:
            self._queue.put_nowait(chunk)

    def finish(self) -> None:
        """End iteration after the chunks already queued."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_END)

    def fail(self, error: TTSError) -> None:
        """End iteration with an error after the chunks already queued."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(error)

    def abort(self) -> None:
        """End iteration now, discarding queued chunks (cancel)."""
        self._closed = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)

    def __aiter__(self) -> ChunkQueue:
        return self

    async def __anext__(self) -> AudioChunk:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # later calls keep ending
            raise StopAsyncIteration
        if isinstance(item, TTSError):
            self._queue.put_nowait(_END)
            raise item
        return item
