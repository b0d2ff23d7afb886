"""The emulator's settings: timing model, protocol limits, auth and injected faults (one frozen object)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Observed ElevenLabs close reason for an internal failure (pipecat #1426).
GENERIC_FAILURE_REASON = "We are sorry, something went wrong. You are not charged for this request."

# Faults that fire after a socket has sent N audio chunks; the order is the precedence when several
# would fire at the same chunk (a dropped socket can no longer be stalled).
CHUNK_FAULTS: tuple[str, ...] = (
    "drop_after_chunks",
    "close_1008_after_chunks",
    "stall_after_chunks",
    "garbage_after_chunks",
)
# Changing any of these re-arms the fault budget (``fault_sockets``).
FAULT_FIELDS: frozenset[str] = frozenset(CHUNK_FAULTS) | {"fault_sockets", "close_reason"}
# Changing any of these refills the handshake bucket (a test's storm starts from a full burst).
HANDSHAKE_FIELDS: frozenset[str] = frozenset({"handshake_rate", "handshake_burst"})
# How a handshake over the rate is refused: HTTP 429 before the upgrade (what an edge/CDN answers),
# or an upgrade followed by an error frame and close 1008 (what the API itself does for errors).
HANDSHAKE_REFUSALS: tuple[str, ...] = ("http_429", "close_1008")


def _opt(default: Any, help_text: str) -> Any:
    # One description per field, shown by ``python -m emulator --help`` and readable here.
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that shapes the emulator's behaviour; replaced whole at runtime, never mutated."""

    connect_delay_ms: float = _opt(0.0, "Delay before a WebSocket handshake completes (TLS + WS set-up).")
    ttfb_ms: float = _opt(0.0, "Time from a generation trigger to its first audio chunk.")
    realtime_factor: float = _opt(0.0, "Produce audio N x faster than real time; 0 = as fast as possible.")
    pacing_grid_ms: float = _opt(
        0.0, "Paced chunks after a generation's first are sent at the next multiple of this many ms "
        "of the loop clock (0 = exactly on time); a load test's emulator then wakes once per tick "
        "for many streams rather than once per chunk.",
    )
    ms_per_char: float = _opt(60.0, "Synthetic audio per character of text.")
    chunk_ms: float = _opt(
        500.0, "Target audio duration of one streamed chunk (frames stay far below 1 MiB)."
    )
    max_contexts_per_socket: int = _opt(
        5, "Live contexts per multi-stream socket; one more closes it with 1008."
    )
    api_key: str | None = field(
        default=None, repr=False, metadata={"help": "The only accepted key; unset accepts anything."}
    )
    inactivity_timeout_default: float = _opt(
        20.0, "Idle seconds before a 1008 close if the client sets none."
    )
    drop_after_chunks: int | None = _opt(
        None, "Abort the TCP connection (no close frame) after N audio chunks."
    )
    close_1008_after_chunks: int | None = _opt(None, "Close with 1008 and close_reason after N audio chunks.")
    close_reason: str = _opt(GENERIC_FAILURE_REASON, "Reason sent by the close_1008_after_chunks fault.")
    stall_after_chunks: int | None = _opt(None, "Send nothing more (socket kept open) after N audio chunks.")
    garbage_after_chunks: int | None = _opt(
        None, "Send one non-JSON frame after N audio chunks, then carry on."
    )
    fault_sockets: int | None = _opt(
        None, "Sockets the chunk faults may fire on before disarming; unset = all."
    )
    reject_voice_ids: frozenset[str] = field(
        default_factory=frozenset, metadata={"help": "Voice ids answered as unknown (WS 1008, HTTP 400)."}
    )
    http_split_samples: bool = _opt(False, "Cut HTTP /stream PCM chunks mid-sample, as the real API may.")
    handshake_rate: float | None = _opt(
        None, "WebSocket handshakes admitted per second (token bucket); unset = unlimited."
    )
    handshake_burst: int = _opt(10, "Handshakes admitted back to back before handshake_rate applies.")
    handshake_refusal: str = _opt(
        "http_429", "How a handshake over the rate is refused: http_429 (no upgrade) or close_1008."
    )
    max_concurrent_requests: int | None = _opt(
        None,
        "Account concurrency: generations at once (WS contexts producing audio + HTTP TTS requests); "
        "beyond it HTTP 429 / WS error too_many_concurrent_requests + 1008. Unset = unlimited.",
    )

    def __post_init__(self) -> None:
        """Reject values the emulator cannot honour, naming the field."""
        if not isinstance(self.reject_voice_ids, frozenset):
            object.__setattr__(self, "reject_voice_ids", frozenset(self.reject_voice_ids))
        _check_range("connect_delay_ms", self.connect_delay_ms, 0, 600_000)
        _check_range("ttfb_ms", self.ttfb_ms, 0, 600_000)
        _check_range("realtime_factor", self.realtime_factor, 0, 1_000_000)
        _check_range("pacing_grid_ms", self.pacing_grid_ms, 0, 100)
        _check_range("ms_per_char", self.ms_per_char, 1, 1000)
        _check_range("chunk_ms", self.chunk_ms, 10, 5000)
        _check_range("inactivity_timeout_default", self.inactivity_timeout_default, 0.01, 180)
        if not isinstance(self.max_contexts_per_socket, int) or self.max_contexts_per_socket < 1:
            raise ValueError(
                f"max_contexts_per_socket must be an int >= 1, got {self.max_contexts_per_socket!r}"
            )
        if self.handshake_rate is not None:
            _check_range("handshake_rate", self.handshake_rate, 0.001, 1_000_000)
        if isinstance(self.handshake_burst, bool) or not isinstance(self.handshake_burst, int) \
                or self.handshake_burst < 1:
            raise ValueError(f"handshake_burst must be an int >= 1, got {self.handshake_burst!r}")
        if self.handshake_refusal not in HANDSHAKE_REFUSALS:
            raise ValueError(f"handshake_refusal must be one of {', '.join(HANDSHAKE_REFUSALS)}, "
                             f"got {self.handshake_refusal!r}")
        for name in (*CHUNK_FAULTS, "fault_sockets", "max_concurrent_requests"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be None or an int >= 0, got {value!r}")
        if len(self.close_reason.encode()) > 123:
            raise ValueError("close_reason must fit a WebSocket close frame (123 bytes UTF-8)")

    @property
    def chunk_faults_set(self) -> bool:
        """True when any chunk fault is configured (the per-chunk fast path skips them otherwise)."""
        return (self.drop_after_chunks is not None or self.close_1008_after_chunks is not None
                or self.stall_after_chunks is not None or self.garbage_after_chunks is not None)

    def replace(self, **changes: Any) -> EmulatorConfig:
        """Return a copy with ``changes`` applied (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    def with_mapping(self, data: Mapping[str, Any]) -> EmulatorConfig:
        """Return a copy updated from JSON-like data (unknown keys and bad values raise ValueError)."""
        return self.replace(**coerce_changes(data))

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable view; the API key is masked."""
        data = dataclasses.asdict(self)
        data["reject_voice_ids"] = sorted(self.reject_voice_ids)
        data["api_key"] = None if self.api_key is None else "***"
        return data


def _check_range(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be within [{low}, {high}], got {value!r}")


FIELD_NAMES: frozenset[str] = frozenset(f.name for f in dataclasses.fields(EmulatorConfig))


def coerce_changes(data: Mapping[str, Any]) -> dict[str, Any]:
    """Turn JSON values into field values (lists into frozensets); unknown keys raise ValueError."""
    unknown = set(data) - FIELD_NAMES
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    changes = dict(data)
    if "reject_voice_ids" in changes:
        ids = changes["reject_voice_ids"]
        if isinstance(ids, str) or not isinstance(ids, Iterable):
            raise ValueError("reject_voice_ids must be a list of voice ids")
        changes["reject_voice_ids"] = frozenset(str(v) for v in ids)
    return changes
