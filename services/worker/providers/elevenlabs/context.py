"""One upstream context as the job sees it: a :class:`SynthesisStream` that can move between sockets.

A context asks for an upstream permit and a socket slot only at its first non-blank text: until
then it costs the account nothing (a tenant's idle contexts never make another tenant wait), and
one that sends no text within ``UPSTREAM_TEXT_WAIT_S`` ends with ``input_timeout``; one that ends
with no text at all finishes at once without touching the upstream. Once placed, a context that
has been quiet (no text sent, no audio received) for ``UPSTREAM_IDLE_RELEASE_S`` gives its permits
back and turns *dormant* on its socket; its next text, flush or end is held back until it has a
permit again (:meth:`rest` / :meth:`resume`).

Until its first audio reaches the consumer a context keeps every text message it sent, so a socket
failure can replay it on another socket without the listener noticing. Once audio went out it can
still move (*fail over*), but only forward: its :class:`~.resume.ResumePoint` knows which characters
the listener heard, and the new socket gets the text from the first word it did not hear (see there);
when that is not possible it finishes on its socket or fails. Its deadline timer watches the
upstream, not the consumer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from shared.errors import InputTimeout, TTSError
from worker.providers.base import AudioChunk, ChunkQueue, Provider

from . import messages
from .deadline import Deadline
from .localtail import LocalTail
from .options import ContextSpec
from .output_track import OutputTrack
from .resume import ResumePoint


class ContextSocket(Protocol):
    """What a placed context needs from its socket (the socket module implements it; no import back)."""

    def enqueue(self, ctx: UpstreamContext, msg: str) -> None:
        """Queue a message about the already initialised ``ctx``."""

    def end_context(self, ctx: UpstreamContext) -> None:
        """End of input: generate the rest, then close ``ctx`` upstream."""

    def close_context(self, ctx: UpstreamContext) -> None:
        """Close ``ctx`` upstream now (cancel/fail); its slot stays taken until the final."""

    def context_timed_out(self, ctx: UpstreamContext) -> None:
        """``ctx`` waited past its deadline for audio."""


class ContextHost(Protocol):
    """What a context needs from the pool while it has no socket."""

    def unplaced_cancelled(self, ctx: UpstreamContext) -> None:
        """The context was cancelled while waiting to be (re)placed."""

    def wants_permit(self, ctx: UpstreamContext) -> None:
        """A dormant context has something to synthesize again: get it a permit (in the background)."""

    def wants_placement(self, ctx: UpstreamContext) -> None:
        """The context has text to synthesize: take a permit and a slot for it (in the background)."""

    def forget(self, ctx: UpstreamContext) -> None:
        """The context ended without ever asking for placement."""


class UpstreamContext(Deadline):
    """A running context: push text in, iterate audio out (implements ``SynthesisStream``)."""

    def __init__(self, context_id: str, spec: ContextSpec, host: ContextHost, timeout_s: float,
                 tenant: str = "", *, max_failovers: int = 0, failover_text_bytes: int = 65536) -> None:
        """``timeout_s`` bounds the wait for audio after a flush/end and the gap between frames after end;
        ``tenant`` (the client key id) is whose fair share of the account's permits it counts against;
        ``max_failovers`` bounds resumes after audio went out (0: none), ``failover_text_bytes`` the
        unspoken text kept for them."""
        self.id = context_id
        self.tenant = tenant
        self.spec = spec
        self.host = host
        self.queue = ChunkQueue()
        self.timeout_s = timeout_s
        self.socket: ContextSocket | None = None
        self.attempts = 0  # placements that reached the upstream, plus the current one (1 = first socket)
        self.unreached_since: float | None = None  # first failed handshake since it last reached one
        self.created_at = time.monotonic()
        self.first_text_at: float | None = None
        self.first_audio_at: float | None = None
        self.ended = False
        self.cancelled = False
        self.outcome: str | None = None  # final | failed | cancelled: what the consumer saw
        self.holds_permit = False  # counted against the account-wide concurrency limit
        self.no_retry = False  # its own deadline expired: fail, do not move
        self.upstream_closed = False  # close_context queued on the current socket
        self.audio_received = False  # upstream audio arrived (on any socket)
        self.audio_sent = False  # a chunk reached the consumer: never replay from here on
        self.history: list[str] | None = []  # text messages after init, kept until audio_sent
        self.last_sent = 0.0
        self._has_text = False
        self._flushed = False
        self._track = OutputTrack(spec.output, spec.key.output_format)
        self._armed = False
        self._last_progress = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.placement_requested = False  # asked for a permit and a slot (at its first non-blank text)
        self.placing: asyncio.Task[None] | None = None  # that request, while it waits
        self._text_timer: asyncio.TimerHandle | None = None
        self.dormant = False  # on its socket without permits (idle); see rest()/resume()
        self.last_activity = self.created_at  # last text/flush/end sent or audio received
        self._held_back: list[str] = []  # messages that wait for the permit while dormant
        self.resume_point = ResumePoint(context_id, spec.key.output_format, failover_text_bytes, max_failovers)
        self._resuming = False  # moved after audio went out: replay() sends the unspoken text
        self.local: LocalTail | None = None  # FAILOVER_LOCAL_VOICE: the local voice speaks the rest
        self.local_chars = 0  # text given after the local voice took over (no paid upstream saw it)

    def wait_for_text(self, seconds: float) -> None:
        """Start the clock: no non-blank text within ``seconds`` ends the context with ``input_timeout``."""
        self._text_timer = asyncio.get_running_loop().call_later(seconds, self._no_text, seconds)

    def _no_text(self, seconds: float) -> None:
        self._text_timer = None
        if self.placement_requested or self.outcome is not None:
            return
        self.fail(InputTimeout(f"no text to synthesize within {seconds:g}s of the context's start",
                               waited_s=seconds))
        self.host.forget(self)

    def _stop_text_wait(self) -> None:
        if self._text_timer is not None:
            self._text_timer.cancel()
            self._text_timer = None

    # -- SynthesisStream --------------------------------------------------------------------------------
    async def send_text(self, text: str, flush: bool = False) -> None:
        """Append text; ``flush`` forces generation of everything buffered."""
        if self.outcome is not None or self.ended or (not text and not flush):
            return
        if self.local is not None:
            self.local_chars += len(text)
            await self.local.send_text(text, flush)
            return
        if text:
            self._has_text = True
            if self.first_text_at is None:
                self.first_text_at = time.monotonic()
            msg = messages.send_text(self.id, text, flush)
        else:
            msg = messages.flush(self.id)
        if self.history is not None:
            self.history.append(msg)
        self.resume_point.add_text(text, flush or self.spec.key.auto_mode)  # auto_mode voices each message whole
        self.last_activity = time.monotonic()
        if self.dormant:
            self._held_back.append(msg)
            if text.strip() or flush:
                self._wake()
        elif self.socket is not None:
            self.socket.enqueue(self, msg)
        elif not self.placement_requested and text.strip():
            self.placement_requested = True
            self._stop_text_wait()
            self.host.wants_placement(self)  # the history so far goes out at placement
        if flush and self._has_text:
            self._flushed = True
            if not self.audio_received and not self.dormant:
                self._arm()

    async def end_input(self) -> None:
        """No more text: synthesize the rest, then finish."""
        if self.outcome is not None or self.ended:
            return
        self.ended = True
        if self.local is not None:
            await self.local.end_input()
            return
        if not self.placement_requested:
            # Nothing to synthesize: the final now, and the upstream never hears of this context.
            self._stop_text_wait()
            self.outcome = "final"
            self.history = None
            self.queue.finish()
            self.host.forget(self)
            return
        self.last_activity = time.monotonic()
        if self.dormant:
            self._wake()  # flush and close go out with the permit (resume)
            return
        if self.socket is not None:
            self.socket.end_context(self)
        self._arm()

    async def cancel(self) -> None:
        """Stop now: drop queued and late audio, close the upstream context; the slot frees at its final."""
        self.abort()

    def abort(self) -> None:
        """:meth:`cancel` without awaiting (used from callbacks)."""
        if self.cancelled:
            return
        self.cancelled = True
        self._stop_text_wait()
        if self.outcome is None:
            self.outcome = "cancelled"
        self.queue.abort()
        self.history = None
        if self.local is not None:
            self.local.cancel()
        if self.dormant:
            self._held_back.clear()
            if self.placing is not None:
                self.placing.cancel()  # no permit needed any more: closing generates nothing
        if self.socket is not None:
            self.socket.close_context(self)
        else:
            self.host.unplaced_cancelled(self)

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        """Audio chunks in order."""
        return self.queue

    # -- driven by the socket and the pool ------------------------------------------------------------------
    @property
    def awaiting_audio(self) -> bool:
        """Flushed (or ended) and its deadline for audio runs: generating upstream, however slowly."""
        return self._armed

    def rest(self) -> None:
        """The pool took its permits back while it idles: hold back what needs generating until resumed."""
        self.dormant = True

    def resume(self) -> None:
        """It has permits again: send what was held back (and the end, if it came meanwhile)."""
        self.dormant = False
        held, self._held_back = self._held_back, []
        if self.socket is None or self.outcome is not None:
            return
        for msg in held:
            self.socket.enqueue(self, msg)
        if self.ended:
            self.socket.end_context(self)
            self._arm()
        elif self._flushed and not self.audio_received:
            self._arm()

    def _wake(self) -> None:
        if self.placing is None:
            self.host.wants_permit(self)

    @property
    def live(self) -> bool:
        """True while the consumer still waits for audio or its end."""
        return self.outcome is None

    def replay(self) -> list[str]:
        """Every message to send on a fresh socket: init, the text so far, and the end if it came."""
        out = [messages.init_context(self.id, self.spec.voice_settings, self.spec.generation_config)]
        out.extend(self.resume_point.pending_messages() if self._resuming else self.history or ())
        if self.cancelled:
            out.append(messages.close_context(self.id))  # cancelled while its placement was under way
        elif self.ended:
            out += [messages.flush(self.id), messages.close_context(self.id)]
        return out

    @property
    def resumable(self) -> bool:
        """Audio went out, yet a move would be lossless (alignment tracked) and failovers are left."""
        return self.audio_sent and not self.dormant and self.resume_point.can_resume()

    @property
    def failovers(self) -> list[dict[str, Any]]:
        """Each failover after audio went out: ``{at_char, reason, cause}`` (for the final)."""
        return self.resume_point.failovers

    @property
    def rebilled_chars(self) -> int:
        """Characters a paid upstream received twice because a failover sent them again."""
        return self.resume_point.rebilled_chars

    @property
    def billed_delta(self) -> int:
        """Billed characters beyond the text handed in: re-sent ones count twice, local-voice-only ones not."""
        return self.resume_point.rebilled_chars - self.local_chars

    def speak_locally(self, provider: Provider, reason: str, cause: str) -> None:
        """No socket took over in time: ``provider`` (the local voice) speaks the rest from the resume point."""
        self.resume_point.mark_local(reason, cause, fresh=not self._resuming or self.audio_received)
        self._disarm()
        self.local = LocalTail(self, provider)
        if self.ended:
            self.local.end_soon()  # its stream ends once the unheard text is in

    def local_audio(self, audio: bytes, alignment: dict[str, Any] | None) -> None:
        """A chunk from the local voice (in the upstream format: the same converter carries on)."""
        if self.outcome is None and audio:
            self._release(audio, alignment)

    def local_done(self) -> None:
        """The local voice finished the context."""
        self._finish()

    def prepare_retry(self, reason: str = "", cause: str = "", again: bool = True) -> None:
        """Start over on another socket: forget upstream audio that never reached the consumer; after
        audio went out, continue from the first word the listener has not heard (``reason``/``cause``
        name the failure in the final's failover list; ``again`` False: the socket it was moved to
        never opened, so it still waits to take over from the same point, no new failover)."""
        if self.audio_sent and not again and self._resuming and not self.audio_received:
            return
        if self.audio_sent:
            self.resume_point.resume(reason, cause)
            self._resuming = True
            self.audio_received = False  # a fresh deadline for the new socket's first audio
            return
        self.resume_point.restart()
        if self.audio_received and not self.audio_sent:
            self._track = OutputTrack(self.spec.output, self.spec.key.output_format)
            self.audio_received = False

    def attach(self, sock: ContextSocket) -> None:
        """Placed on ``sock``: its deadline (if any) restarts there."""
        self.socket = sock
        self.attempts += 1
        self.upstream_closed = self.ended or self.cancelled
        self._disarm()
        if self.ended or self.cancelled or (self._flushed and not self.audio_received):
            self._arm()  # a fresh deadline on the new socket

    def detach(self) -> None:
        """The socket is gone or the context's final arrived."""
        self.socket = None
        self._disarm()

    def on_audio(self, audio: bytes, alignment: dict[str, Any] | None) -> None:
        """Upstream audio for this context (already base64-decoded)."""
        now = time.monotonic()
        self._last_progress = now
        self.last_activity = now
        if not self.audio_received:
            self.audio_received = True
            self.first_audio_at = now
            if not self.ended and not self.cancelled:
                self._disarm()  # waiting for more text is not a stall
        if self.outcome is not None or self.local is not None:
            return  # cancelled or failed (or handed to the local voice): late audio is dropped here
        audio, alignment = self.resume_point.take(audio, alignment)
        if audio:
            self._release(audio, alignment)

    def _release(self, audio: bytes, alignment: dict[str, Any] | None) -> None:
        chunk = self._track.feed(audio, alignment)
        if chunk is not None:
            self._emit(chunk)

    def on_final(self) -> None:
        """The upstream finished this context (its slot is free again)."""
        self.detach()
        if self.local is None:
            self._finish()

    def _finish(self) -> None:
        if self.outcome is None:
            held, alignment = self.resume_point.release()
            if held:
                self._release(held, alignment)
            tail = self._track.finish()
            if tail is not None:
                self._emit(tail)
            self.outcome = "final"
            self.queue.finish()

    def fail(self, error: TTSError) -> None:
        """End the consumer's iteration with ``error`` and close the upstream context if it is still open."""
        self._stop_text_wait()
        if self.outcome is None:
            self.outcome = "failed"
            self.history = None
            self.queue.fail(error)
        if self.socket is not None:
            self.socket.close_context(self)

    def note_closed(self) -> None:
        """close_context was queued: from now on only its final (or the deadline) is awaited."""
        self.upstream_closed = True
        self._arm()

    def _emit(self, chunk: AudioChunk) -> None:
        self.queue.put(chunk)
        self.audio_sent = True
        self.history = None
