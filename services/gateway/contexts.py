"""A context (one utterance) as the gateway tracks it, from start to its one final or error."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from gateway.ctxtrace import ContextTrace
from shared import protocol
from shared.audio.formats import AudioFormat

# AWAITING_TEXT: started without text (an ElevenLabs context init, a native ``start`` with none); its
# job is enqueued with the first text, so that text rides in the job instead of a later input hop.
AWAITING_TEXT, QUEUED, RUNNING, DONE = "awaiting_text", "queued", "running", "done"


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
    # The client's W3C trace context (traceparent/tracestate), already bounded: its spans' parent.
    trace_parent: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContextUsage:
    """What one context cost (gateway/metering.py computes it); the same numbers go on its final and its key's day."""

    billed_chars: int = 0
    synthesized_chars: int = 0
    cached_chars: int = 0
    audio_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The fields a native ``final`` carries (snake_case)."""
        return {"billed_chars": self.billed_chars, "cached_chars": self.cached_chars,
                "synthesized_chars": self.synthesized_chars, "audio_seconds": round(self.audio_seconds, 3)}

    def to_el_json(self) -> dict[str, Any]:
        """The fields an ElevenLabs-compatible ``isFinal`` carries (camelCase, as the rest of that frame)."""
        return {"billedChars": self.billed_chars, "cachedChars": self.cached_chars,
                "synthesizedChars": self.synthesized_chars, "audioSeconds": round(self.audio_seconds, 3)}

    def counters(self) -> dict[str, int]:
        """Integer increments for Redis (audio in whole milliseconds, so HINCRBY stays exact)."""
        return {"billed_chars": self.billed_chars, "synthesized_chars": self.synthesized_chars,
                "cached_chars": self.cached_chars, "audio_ms": round(self.audio_seconds * 1000)}


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
    enqueued: bool = False  # a job exists in Redis for this context (some attempt of it)
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
    trace: ContextTrace = field(init=False)
    # Where the worker continued on another upstream socket after audio went out (protocol.Final.failover).
    failover: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.trace = ContextTrace(self.request.trace_parent, self.created_at)
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
        """The job for the current attempt, carrying all text so far (a retry replays it), stamped now.

        Built right before each enqueue, so it also marks the trace's ``enqueue_start``.
        """
        r = self.request
        self.trace.enqueue_started()
        return protocol.JobSpec(
            job_id=self.job_id, session_id=self.session_id, context_id=r.context_id, provider=r.provider,
            voice_id=r.voice_id, model_id=r.model_id, output_format=r.fmt.name, text="".join(self.text_parts),
            input_closed=self.input_closed, voice_settings=r.voice_settings, options=r.options,
            attempt=self.attempt, enqueued_at=time.time(), tenant=self.tenant, trace=self.trace.carrier(),
            flush=self.owed_since is not None and not self.input_closed)

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
