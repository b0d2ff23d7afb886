"""What a session hands its protocol adapter (native WS, ElevenLabs WS, HTTP): audio, finals, errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.errors import TTSError

if TYPE_CHECKING:
    from gateway.contexts import ContextUsage
    from gateway.ctxtrace import ContextTrace


@dataclass(slots=True)
class AudioEvent:
    """One audio chunk for a context; ``seq`` counts from 0 per context without gaps."""

    context_id: str
    seq: int
    audio: bytes
    alignment: dict[str, Any] | None = None
    # The context's trace on its first chunk only: the adapter marks the send (gateway/ctxtrace.mark_sent).
    trace: ContextTrace | None = None


@dataclass(slots=True)
class FinalEvent:
    """The context ended normally (``completed``) or by the client's cancel (``cancelled``)."""

    context_id: str
    reason: str
    chunks: int
    audio_bytes: int
    characters: int
    ttfa_ms: float | None
    duration_ms: float
    cached: bool = False
    usage: ContextUsage | None = None  # billed/cached characters and audio seconds (gateway/metering.py)
    trace: ContextTrace | None = None  # ms per hop and trace id, read when the final is written out
    failover: list[dict[str, Any]] = field(default_factory=list)  # mid-utterance upstream failovers


@dataclass(slots=True)
class ErrorEvent:
    """The context (or, with ``context_id`` None, the session) failed with a typed error."""

    context_id: str | None
    error: TTSError

    @property
    def code(self) -> str:
        """The error's stable code."""
        return self.error.code


@dataclass(slots=True)
class SessionClosing:
    """The session must end (slow consumer, drain); the adapter closes with ``error.ws_close``."""

    error: TTSError


Event = AudioEvent | FinalEvent | ErrorEvent | SessionClosing
