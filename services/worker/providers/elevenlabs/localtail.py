"""The rest of a failing-over context spoken by the local voice (``FAILOVER_LOCAL_VOICE``, off by default).

When no upstream socket can take a context over within its deadline (the upstream is unreachable,
not just one socket), the local Piper voice speaks the text from the context's resume point on, in
the upstream's PCM format, so the context's own converter carries on into the client's format
without a seam in the container (one WAV header, one MP3 stream). A different voice finishing the
sentence is better than silence and an error only where an operator says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from shared.errors import TTSError
from shared.logging import get_logger
from worker.providers.base import Provider, SynthesisRequest, SynthesisStream

from .options import ContextSpec
from .resume import ResumePoint

log = get_logger(__name__)

LOCAL_VOICE = "joe"  # worker.providers.local.VOICE_ID (not imported: that module loads numpy and Piper)


class TailedContext(Protocol):
    """What the local voice needs of the context it finishes (``.context.UpstreamContext``; named
    structurally so the context module imports this one and not the other way round)."""

    id: str
    spec: ContextSpec
    resume_point: ResumePoint

    def fail(self, error: TTSError) -> None: ...

    def local_audio(self, audio: bytes, alignment: dict[str, Any] | None) -> None: ...

    def local_done(self) -> None: ...


class LocalTail:
    """Feeds a context from a local-voice stream; text and the end that arrive meanwhile follow it."""

    def __init__(self, ctx: TailedContext, provider: Provider) -> None:
        """Start speaking ``ctx``'s unheard text with ``provider`` (in the background)."""
        self._ctx = ctx
        self._provider = provider
        self._stream: SynthesisStream | None = None
        self._early: list[tuple[str, bool]] = []  # text given while the local stream opens
        self._ended = False
        self._task = asyncio.create_task(self._run(), name=f"local-tail-{ctx.id}")

    async def send_text(self, text: str, flush: bool) -> None:
        """More text for the local voice (held until its stream is open)."""
        if self._stream is None:
            self._early.append((text, flush))
            return
        await self._stream.send_text(text, flush)

    async def end_input(self) -> None:
        """No more text."""
        self._ended = True
        if self._stream is not None:
            await self._stream.end_input()

    def end_soon(self) -> None:
        """The input had already ended when the local voice took over."""
        self._ended = True

    def cancel(self) -> None:
        """Stop now (the stream is cancelled as the task unwinds)."""
        self._task.cancel()

    async def _run(self) -> None:
        ctx = self._ctx
        try:
            stream = await self._provider.open_stream(SynthesisRequest(
                key=f"{ctx.id}:local", voice_id=LOCAL_VOICE, model_id="", output_format=ctx.spec.key.output_format))
        except TTSError as e:
            log.warning("local_voice_fallback_refused", context_id=ctx.id, code=e.code)
            ctx.fail(e)
            return
        try:
            text, flushed = ctx.resume_point.pending_text()
            self._stream = stream
            if text:
                await stream.send_text(text, flush=flushed)
            for more, flush in self._early:
                await stream.send_text(more, flush)
            self._early.clear()
            if self._ended:
                await stream.end_input()
            async for chunk in stream:
                ctx.local_audio(chunk.audio, chunk.alignment)
            ctx.local_done()
        except TTSError as e:
            ctx.fail(e)
        finally:
            with contextlib.suppress(Exception):
                await stream.cancel()
