"""The wire protocol for everything that crosses Redis: job arguments, input, audio, finals and errors.

Every message is a msgpack map ``{"v": VERSION, "t": <type>, ...fields}`` packed with
``use_bin_type`` so audio travels as raw bytes (base64 exists only at the ElevenLabs edges).
Unknown fields are ignored (a newer peer may add some); an unknown type or version, or a
missing or mistyped field, raises :class:`~shared.errors.ProtocolError`. These docstrings are the spec.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from shared.errors import ProtocolError

VERSION = 1


class Message:
    """Base of every message; ``TYPE`` is its tag on the wire."""

    TYPE: ClassVar[str] = ""


_REGISTRY: dict[str, type[Message]] = {}


def _register(cls: type[Message]) -> type[Message]:
    _REGISTRY[cls.TYPE] = cls
    return cls


# ---- gateway → worker ---------------------------------------------------------------------------------
@_register
@dataclass(frozen=True, slots=True)
class JobSpec(Message):
    """The arq job argument: one context to synthesize.

    ``text`` is what the gateway had when it enqueued; more arrives as :class:`TextInput` on the
    job's input list/channel. ``flush`` asks for ``text`` to be spoken at once, as a TextInput's
    flush would (the client flushed before the job was enqueued). ``input_closed`` means no more
    text will come (whole utterance).
    ``attempt`` counts retries of the same context (the gateway retries only before first audio).
    ``tenant`` is the client key's id (opaque, never the key itself; one id for all of dev mode): the
    worker shares the account's upstream permits fairly between tenants by it.
    ``trace`` is the context's W3C trace context (``traceparent``, ``tracestate``; shared/tracing.py):
    the worker's spans join the gateway's trace. Empty when there is none; a peer without it ignores it.
    """

    TYPE: ClassVar[str] = "job"
    job_id: str
    session_id: str
    context_id: str
    provider: str
    voice_id: str
    model_id: str
    output_format: str
    text: str = ""
    input_closed: bool = False
    voice_settings: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    enqueued_at: float = 0.0
    tenant: str = ""
    trace: dict[str, str] = field(default_factory=dict)
    flush: bool = False


@_register
@dataclass(frozen=True, slots=True)
class TextInput(Message):
    """More text for a running job; ``flush`` forces generation of what is buffered."""

    TYPE: ClassVar[str] = "text"
    seq: int
    text: str
    flush: bool = False


@_register
@dataclass(frozen=True, slots=True)
class EndInput(Message):
    """No more text for this job: synthesize the rest and finish."""

    TYPE: ClassVar[str] = "end"
    seq: int


@_register
@dataclass(frozen=True, slots=True)
class Cancel(Message):
    """Stop the job now (barge-in, client gone, admin reset); ``reason`` is an error code or ``cancelled``.

    A worker acts on a cancel as soon as it arrives, not in ``seq`` order: senders outside the
    context's numbering (the admin reset) send ``seq`` 0.
    """

    TYPE: ClassVar[str] = "cancel"
    seq: int
    reason: str = "cancelled"


# ---- worker → gateway (session channel) ---------------------------------------------------------------
@_register
@dataclass(frozen=True, slots=True)
class JobStarted(Message):
    """A worker took the job; the gateway watches that worker's heartbeat from now on."""

    TYPE: ClassVar[str] = "started"
    job_id: str
    context_id: str
    worker_id: str
    queue_wait_ms: float = 0.0


@_register
@dataclass(frozen=True, slots=True)
class Audio(Message):
    """One chunk of audio in the job's output format; ``seq`` counts from 0 per job with no gaps."""

    TYPE: ClassVar[str] = "audio"
    job_id: str
    context_id: str
    seq: int
    audio: bytes
    alignment: dict[str, Any] | None = None


@_register
@dataclass(frozen=True, slots=True)
class Final(Message):
    """The job completed; exactly one Final or Error ends every job. ``chunks`` = audio frames sent.

    ``characters`` is all the text the worker handed its provider; ``billed_chars`` is the part a paid
    upstream (ElevenLabs) received, 0 for the local voice (usage metering, gateway/metering.py): text
    sent again after a failover counts twice, as it is billed twice.
    ``timings`` is the worker's marks on the first-audio path (shared/hops.py: mark name -> wall-clock
    epoch seconds); optional, added without a version bump: an older gateway ignores it, an older
    worker leaves it out (None) and the gateway's breakdown then lacks the worker's hops.

    ``failover`` (added in protocol v1 as an optional field; older peers ignore it): one map per time
    the context continued on another upstream socket after audio went out, in order:
    ``{"at_char": int, "reason": str, "cause": str}`` — the offset in the context's text where the
    new socket took over, the failure's metric label (``dropped``, ``stalled``, ``server_error``...)
    and its error code (``upstream_disconnected``...). Empty when none happened.
    """

    TYPE: ClassVar[str] = "final"
    job_id: str
    context_id: str
    chunks: int
    audio_bytes: int
    characters: int = 0
    upstream_ttfb_ms: float | None = None
    billed_chars: int = 0
    timings: dict[str, float] | None = None
    failover: list[Any] = field(default_factory=list)


@_register
@dataclass(frozen=True, slots=True)
class Error(Message):
    """The job failed; ``code`` is from shared.errors. ``chunks`` audio frames had gone out before it."""

    TYPE: ClassVar[str] = "error"
    job_id: str
    context_id: str
    code: str
    message: str
    retryable: bool = False
    chunks: int = 0


# ---- worker → every gateway: a Redis key with a short TTL, not a channel -----------------------------
@_register
@dataclass(frozen=True, slots=True)
class WorkerHeartbeat(Message):
    """What a live worker says about itself every beat, under ``keys.worker_heartbeat`` (TTL'd).

    Gateways build their voice catalogue, readiness and ``/admin/status`` from these. ``providers``
    maps each provider the worker runs to its ``status()`` (small, JSON-able); ``voices`` lists the
    voice records it offers, each at least ``{"voice_id": str, "provider": str}`` plus its name,
    language, description, default model, sample rate and labels. ``at`` and ``started_at`` are the
    worker's wall clock (epoch seconds).
    """

    TYPE: ClassVar[str] = "worker_heartbeat"
    worker_id: str
    host: str
    pid: int
    started_at: float
    at: float
    active_jobs: int = 0
    max_jobs: int = 0
    jobs_done: int = 0
    draining: bool = False
    providers: dict[str, Any] = field(default_factory=dict)
    voices: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The gateway indexes voices by these two fields: a record without them is malformed here,
        # not a KeyError later inside a catalogue refresh.
        for v in self.voices:
            if not (isinstance(v, dict) and isinstance(v.get("voice_id"), str)
                    and isinstance(v.get("provider"), str)):
                raise ProtocolError(f"{self.TYPE}.voices has a record without a voice_id and provider: {v!r:.80}")


def encode(msg: Message) -> bytes:
    """Pack a message for Redis."""
    body = {name: getattr(msg, name) for name in _NAMES[type(msg)]}
    body["v"] = VERSION
    body["t"] = msg.TYPE
    return msgpack.packb(body, use_bin_type=True)


def decode(data: bytes) -> Message:
    """Unpack a message from Redis, raising ProtocolError on anything malformed."""
    try:
        body = msgpack.unpackb(data, raw=False)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"undecodable frame: {type(e).__name__}") from e
    if not isinstance(body, dict):
        raise ProtocolError("frame is not a map")
    if body.get("v") != VERSION:
        raise ProtocolError(f"unsupported protocol version {body.get('v')!r}")
    cls = _REGISTRY.get(body.get("t"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown message type {body.get('t')!r}")
    kwargs = {}
    for name, allowed, no_bool, required in _SPECS[cls]:
        if name in body:
            value = body[name]
            if not isinstance(value, allowed) or (no_bool and value.__class__ is bool):
                raise ProtocolError(f"{cls.TYPE}.{name} has the wrong type ({type(value).__name__})")
            kwargs[name] = value
        elif required:
            raise ProtocolError(f"{cls.TYPE} is missing field {name!r}")
    return cls(**kwargs)


def decode_worker_heartbeat(data: bytes) -> WorkerHeartbeat:
    """Unpack a heartbeat key's value, raising ProtocolError on anything else, malformed or not."""
    msg = decode(data)
    if not isinstance(msg, WorkerHeartbeat):
        raise ProtocolError(f"expected a worker heartbeat, got {msg.TYPE!r}")
    return msg


_HINTS: dict[type[Message], dict[str, Any]] = {
    cls: typing.get_type_hints(cls) for cls in _REGISTRY.values()
}


def _compile(hint: Any) -> tuple[tuple[type, ...], bool]:
    """``hint`` as (isinstance types, reject bool): a union's members, float taking int, never bool for numbers."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    allowed: list[type] = []
    numeric = bool_ok = False
    for h in members:
        if h is type(None):
            allowed.append(type(None))
        elif h is float:
            allowed += [int, float]
            numeric = True
        elif h is int:
            allowed.append(int)
            numeric = True
        else:
            base = typing.get_origin(h) or h
            allowed.append(base)
            bool_ok = bool_ok or base is bool
    return tuple(allowed), numeric and not bool_ok


# Per message class, computed once (dataclasses.fields and type hints are slow on every frame):
# field names for encode; (name, types, reject bool, required) for decode.
_NAMES: dict[type[Message], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _REGISTRY.values()  # type: ignore[arg-type]
}
_SPECS: dict[type[Message], tuple[tuple[str, tuple[type, ...], bool, bool], ...]] = {
    cls: tuple((f.name, *_compile(_HINTS[cls][f.name]),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
               for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    for cls in _REGISTRY.values()
}
