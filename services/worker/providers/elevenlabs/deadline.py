"""A placed context's deadline for audio: armed at a flush or the end, pushed on by every chunk.

The timer watches the upstream, not the consumer: armed when the context waits for audio (flushed
with none yet, or ended), it fires ``timeout_s`` after the last progress and asks the socket what
that means (:meth:`~.connection.UpstreamSocket.context_timed_out`: a stalled socket, a context
stuck alone, or a socket still dialling). A context the local voice speaks has no upstream deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from shared.errors import UpstreamTimeout


class _TimeoutJudge(Protocol):
    """The socket side of a context, as far as its deadline is concerned (``.context.ContextSocket``;
    named structurally so this module needs nothing from the context module)."""

    def context_timed_out(self, ctx: Any) -> None: ...


class Deadline:
    """The deadline half of :class:`~.context.UpstreamContext` (which provides these attributes)."""

    timeout_s: float
    socket: _TimeoutJudge | None
    local: Any
    audio_received: bool
    audio_sent: bool
    _armed: bool
    _last_progress: float
    _timer: asyncio.TimerHandle | None

    def _arm(self) -> None:
        if self._armed or self.local is not None:
            return
        self._armed = True
        self._last_progress = time.monotonic()
        self._schedule()

    def _disarm(self) -> None:
        self._armed = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + self._remaining(), self._on_timer)

    def _remaining(self) -> float:
        return max(0.0, self._last_progress + self.timeout_s - time.monotonic())

    def _on_timer(self) -> None:
        self._timer = None
        if not self._armed or self.socket is None:
            return
        if self._remaining() > 0.001:
            self._schedule()
            return
        self._armed = False
        self.socket.context_timed_out(self)

    def extend_deadline(self) -> None:
        """Its deadline fired while its socket was still dialling: wait once more from now."""
        self._disarm()
        self._arm()

    def timeout_error(self) -> UpstreamTimeout:
        """The error for a context whose upstream went quiet past its deadline."""
        what = "first audio" if not self.audio_received else "the rest of the audio"
        return UpstreamTimeout(f"no {what} from upstream within {self.timeout_s:g}s",
                               audio_sent=self.audio_sent)
