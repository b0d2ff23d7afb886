"""A context (one utterance) as the gateway tracks it, from start to its one final or error."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared import protocol
from shared.audio.formats import AudioFormat

if TYPE_CHECKING:
    from gateway.metering import ContextUsage

QUEUED, RUNNING, DONE = "queued", "running", "done"


@dataclass(frozen=True, slots=True)
class ContextRequest:
    """What a client asked for, validated; the same for every client protocol."""

    context_id: str
    voice_id: str
    provider: str
    model_id: str
    fmt: AudioFormat
    voice_settings: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    input_closed: bool = False
    use_cache: bool = True


@dataclass
class ContextState:
    """Mutable bookkeeping of one live context."""

    request: ContextRequest
    session_id: str
    tenant: str = ""
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempt: int = 0
    state: str = QUEUED
    text_parts: list[str] = field(default_factory=list)
    characters: int = 0
    input_closed: bool = False
    input_seq: int = 0
    worker_id: str | None = None
    created_at: float = field(default_factory=time.monotonic)
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    ttfa_origin: float | None = None
    # when the client last flushed or closed input: the upstream owes audio from then on
    owed_since: float | None = None
    first_audio_at: float | None = None
    last_audio_at: float | None = None
    worker_seq: int = 0
    chunks_out: int = 0
    audio_bytes: int = 0
    audio_seconds_played: float = 0.0
    playback_start: float = 0.0
    underruns: int = 0
    cached: bool = False
    # Usage metering (gateway/metering.py): what the worker's Final says a paid upstream got; the total at the end.
    billed_chars: int | None = None
    usage: ContextUsage | None = None
    # Where the worker continued on another upstream socket after audio went out (protocol.Final.failover).
    failover: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.request.text:
            self.text_parts.append(self.request.text)
            self.characters = len(self.request.text)
            if self.request.text.strip():
                self.ttfa_origin = self.created_at
        self.input_closed = self.request.input_closed
        if self.input_closed:
            self.owed_since = self.created_at

    @property
    def context_id(self) -> str:
        """The client's id of this context."""
        return self.request.context_id

    @property
    def live(self) -> bool:
        """Not yet ended."""
        return self.state != DONE

    def next_input_seq(self) -> int:
        """Sequence number for the next input message of the current job (1-based)."""
        self.input_seq += 1
        return self.input_seq

    def job_spec(self) -> protocol.JobSpec:
        """The job for the current attempt, carrying all text so far (a retry replays it)."""
        r = self.request
        return protocol.JobSpec(
            job_id=self.job_id, session_id=self.session_id, context_id=r.context_id, provider=r.provider,
            voice_id=r.voice_id, model_id=r.model_id, output_format=r.fmt.name, text="".join(self.text_parts),
            input_closed=self.input_closed, voice_settings=r.voice_settings, options=r.options,
            attempt=self.attempt, enqueued_at=time.time(), tenant=self.tenant)

    def new_attempt(self) -> None:
        """Re-key the context for a retry: new job id, input sequence restarts."""
        self.attempt += 1
        self.job_id = uuid.uuid4().hex
        self.input_seq = 0
        self.state = QUEUED
        self.worker_id = None
        self.worker_seq = 0
        self.started_at = None
        self.enqueued_at = time.monotonic()
