"""What every compatible HTTP endpoint shares: one utterance on its own session, streamed as it comes.

:class:`Utterance` runs a whole text as one context and hands out its audio chunk by chunk;
:func:`stream_body` sends them with chunked transfer encoding the moment they arrive (nothing is
buffered whole). Headers wait for the first chunk, so an error before any audio (unknown voice,
no workers, a provider refusing the settings) still gets its proper HTTP status; an error after
audio went out aborts the connection, so the client sees a truncated body, never a short "success".
WAV: workers already send the one streaming RIFF header (``OutputEncoder``) at the start of a
context; the edge adds one only if a stream somehow starts without it, never a second.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Self

from aiohttp import web

from gateway.contexts import ContextRequest
from gateway.ctxtrace import mark_sent
from gateway.events import AudioEvent, ErrorEvent, SessionClosing
from gateway.services import GatewayServices
from gateway.session import SynthesisSession
from shared import metrics
from shared.audio.clock import PlayClock
from shared.audio.formats import AudioFormat
from shared.audio.wav import streaming_wav_header
from shared.errors import SlowConsumer, TTSError
from shared.logging import get_logger

log = get_logger(__name__)
CONTEXT_ID = "http"


class Utterance:
    """One whole-text context on a private session: ``async with``, then ``next_audio()`` until None."""

    def __init__(self, services: GatewayServices, *, api: str, tenant: str) -> None:
        self.session = SynthesisSession(services, api=api, tenant=tenant, max_contexts=1)
        self.session.on_overflow = lambda: self.session.close_with(
            SlowConsumer("client is not reading audio fast enough"))
        self._done = False
        self._opened = False

    async def start(self, request: ContextRequest) -> None:
        """Subscribe, then enqueue the context (the request must carry all text, input closed)."""
        await self.session.open()
        self._opened = True
        await self.session.start(request)

    async def next_audio(self) -> AudioEvent | None:
        """The next chunk, or None after the final; raises the context's error."""
        if self._done:
            return None
        event = await self.session.next_event()
        if isinstance(event, AudioEvent):
            return event
        self._done = True
        if isinstance(event, ErrorEvent | SessionClosing):
            raise event.error
        return None

    async def close(self) -> None:
        """Cancel whatever still runs (client gone) and unsubscribe."""
        if self._opened:
            await self.session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# Playing time of the audio sent so far, read from the stream's own framing (exact for VBR codecs
# too), so chunk-relative alignment becomes absolute seconds.
Timeline = PlayClock


def ensure_wav_header(fmt: AudioFormat, first: bytes) -> bytes:
    """Prefix the streaming RIFF header unless the worker already did (it normally has)."""
    if fmt.codec == "wav" and not first.startswith(b"RIFF"):
        return streaming_wav_header(fmt.sample_rate) + first
    return first


async def first_audio(utterance: Utterance, fmt: AudioFormat) -> AudioEvent | None:
    """The first chunk (WAV: starting with its one header, even for a clip with no audio)."""
    first = await utterance.next_audio()
    if fmt.codec == "wav":
        if first is None:
            return AudioEvent(CONTEXT_ID, 0, streaming_wav_header(fmt.sample_rate))
        first.audio = ensure_wav_header(fmt, first.audio)
    return first


async def stream_body(request: web.Request, utterance: Utterance, fmt: AudioFormat, *, content_type: str,
                      render: Callable[[AudioEvent], bytes], prologue: bytes = b"",
                      epilogue: bytes | Callable[[], bytes] = b"",
                      headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Stream every chunk as ``render(chunk)``; raise the context's error if it comes before any audio."""
    first = await first_audio(utterance, fmt)
    resp = web.StreamResponse(status=200, headers={"Content-Type": content_type, "Cache-Control": "no-store",
                                                   **(headers or {})})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        if prologue:
            await resp.write(prologue)
        event = first
        while event is not None:
            body = render(event)
            if body:
                await resp.write(body)
            mark_sent(event)
            event = await utterance.next_audio()
        tail = epilogue() if callable(epilogue) else epilogue
        if tail:
            await resp.write(tail)
    except TTSError as e:
        # Headers are gone: cut the connection so the client sees an incomplete body, not success.
        log.info("http_stream_aborted", code=e.code, session_id=utterance.session.id)
        metrics.CLIENT_ERRORS.labels(metrics.code_label(e.code)).inc()  # reported: as a cut body
        resp.force_close()
        if request.transport is not None:
            request.transport.abort()
        return resp
    except (ConnectionError, RuntimeError):
        return resp  # the client went away; the session is cancelled by the caller's exit
    with contextlib.suppress(ConnectionError, RuntimeError):
        await resp.write_eof()
    return resp


async def collect(utterance: Utterance, fmt: AudioFormat) -> AsyncIterator[AudioEvent]:
    """Every chunk in order."""
    event = await first_audio(utterance, fmt)
    while event is not None:
        yield event
        event = await utterance.next_audio()


class Base64Stream:
    """Base64 of a byte stream, piece by piece: the pieces concatenate to the base64 of the whole.

    Base64 maps 3 bytes to 4 characters, so up to 2 bytes wait for the next piece; ``end()`` pads them.
    """

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        """Base64 of as much of ``carry + data`` as is a multiple of 3 bytes."""
        data = self._carry + data
        cut = len(data) - len(data) % 3
        self._carry = data[cut:]
        return base64.b64encode(data[:cut])

    def end(self) -> bytes:
        """The padded last group."""
        tail, self._carry = self._carry, b""
        return base64.b64encode(tail)
