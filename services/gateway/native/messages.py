"""Client → gateway messages of the native protocol: parsed and validated into typed commands.

Every message is a JSON object with a ``type``. A frame that is not JSON, not an object, has an
unknown type, misses a field or has one of the wrong type raises a typed error naming the problem.
Unknown extra fields are ignored (forward compatibility).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.jsonbody import parse_object
from shared.errors import InvalidMessage
from shared.tracing import clean_carrier

CONTEXT_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Start:
    """Begin a context (utterance)."""

    context_id: str
    voice: str | None
    model: str | None
    format: str
    voice_settings: dict[str, Any]
    options: dict[str, Any]
    text: str
    end: bool
    flush: bool
    cache: bool
    # W3C trace context for this context (``traceparent``/``tracestate`` fields): invalid ones are ignored.
    trace_parent: dict[str, str]


@dataclass(frozen=True, slots=True)
class Text:
    """More text for a context."""

    context_id: str
    text: str
    flush: bool


@dataclass(frozen=True, slots=True)
class Flush:
    """Synthesize what the context has buffered now."""

    context_id: str


@dataclass(frozen=True, slots=True)
class End:
    """No more text for the context."""

    context_id: str


@dataclass(frozen=True, slots=True)
class CancelCmd:
    """Stop the context now (barge-in)."""

    context_id: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Application-level ping; answered with pong."""

    id: Any


Command = Start | Text | Flush | End | CancelCmd | Ping

OPTION_KEYS = {"chunk_length_schedule": list, "auto_mode": bool, "sync_alignment": bool,
               "language_code": str, "apply_text_normalization": str, "seed": int, "alignment": bool}


def parse(raw: str | bytes) -> Command:
    """Parse one text frame (bytes: its payload as sent, UTF-8 not yet checked)."""
    msg = parse_object(raw)
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise InvalidMessage("message has no string 'type'", field="type")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise InvalidMessage(f"unknown message type {kind!r}", field="type", known=sorted(_PARSERS))
    return parser(msg)


def _get(msg: dict[str, Any], name: str, typ: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in msg or msg[name] is None:
        if default is ...:
            raise InvalidMessage(f"field {name!r} is required", field=name)
        return default
    value = msg[name]
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool) and bool not in
                                      (typ if isinstance(typ, tuple) else (typ,))):
        tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise InvalidMessage(f"field {name!r} must be {tname}", field=name)
    return value


def _context_id(msg: dict[str, Any]) -> str:
    cid = _get(msg, "context_id", str)
    if not CONTEXT_ID_RE.match(cid):
        raise InvalidMessage("context_id must be 1-64 characters of A-Z a-z 0-9 _ . : -", field="context_id")
    return cid


def _start(msg: dict[str, Any]) -> Start:
    options = _get(msg, "options", dict, {})
    for key in OPTION_KEYS:
        if key in msg and key not in options:
            options[key] = msg[key]
    clean: dict[str, Any] = {}
    for key, value in options.items():
        expected = OPTION_KEYS.get(key)
        if expected is None:
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise InvalidMessage(f"option {key!r} must be {expected.__name__}", field=key)
        clean[key] = value
    schedule = clean.get("chunk_length_schedule")
    if schedule is not None and not all(isinstance(v, (int, float)) and 50 <= v <= 500 for v in schedule):
        raise InvalidMessage("chunk_length_schedule values must be numbers from 50 to 500",
                             field="chunk_length_schedule")
    return Start(
        context_id=_context_id(msg),
        voice=_get(msg, "voice", str, None),
        model=_get(msg, "model", str, None),
        format=_get(msg, "format", str, "pcm_24000"),
        voice_settings=_get(msg, "voice_settings", dict, {}),
        options=clean,
        text=_get(msg, "text", str, ""),
        end=_get(msg, "end", bool, False),
        flush=_get(msg, "flush", bool, False),
        cache=_get(msg, "cache", bool, True),
        trace_parent=clean_carrier(msg),  # never an error (W3C): a malformed one is simply not joined
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], Command]] = {
    "start": _start,
    "text": lambda m: Text(_context_id(m), _get(m, "text", str), _get(m, "flush", bool, False)),
    "flush": lambda m: Flush(_context_id(m)),
    "end": lambda m: End(_context_id(m)),
    "cancel": lambda m: CancelCmd(_context_id(m)),
    "ping": lambda m: Ping(m.get("id")),
}
