"""ElevenLabs WebSocket wire details: query parameters, client messages, and server frames.

Parsing is lenient where real clients differ (``generation_config`` vs ``generator_config``,
``null``/``{}`` voice settings, a missing ``text``, unknown model ids such as the SDK's literal
``Ellipsis``) and strict where a wrong value would silently change the audio (formats, schedules).
Server frames are exactly what the official SDK, LiveKit and pipecat parse: base64 ``audio``,
camelCase ``isFinal``/``contextId``, ``alignment``/``normalizedAlignment`` objects.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pybase64

from gateway.jsonbody import parse_object
from shared.audio.formats import AudioFormat, parse_format
from shared.audio.formats import UnsupportedFormat as AudioUnsupported
from shared.errors import InvalidMessage, InvalidRequest, UnsupportedFormat

DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"  # ElevenLabs' default on every TTS endpoint
DEFAULT_INACTIVITY_S = 20.0
MAX_INACTIVITY_S = 180.0
# Server frames stay well under the 1 MiB default frame limit of Python ``websockets`` clients
# (the official SDK's): 512 KiB of audio is ~683 KiB of base64.
MAX_AUDIO_PER_FRAME = 512 * 1024
CLOSE_REASON_LIMIT = 123

_MODEL_RE = re.compile(r"^[a-z][a-z0-9_.\-]{1,63}$")
# Model ids this deployment knows; anything else (``Ellipsis``, ``tts-1``) means "the default model".
_KNOWN_MODEL_PREFIXES = ("eleven_",)
_VOICE_NUMBERS = ("stability", "similarity_boost", "style", "speed")
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


def inactivity_message(timeout_s: float) -> str:
    """The text ElevenLabs closes an idle stream with (elevenlabs-docs #426)."""
    shown = int(timeout_s) if float(timeout_s).is_integer() else timeout_s
    return (f"Have not received a new text input within the timeout of {shown} seconds. Streaming input "
            "terminated. Please make sure to either feed the input in the timely manner, or to send the end "
            'of input text (empty string "") when done.')


def normalize_model(model_id: str | None, known: frozenset[str] = frozenset()) -> str | None:
    """The model to ask for, or None for the voice's default: unknown ids are not an error."""
    if not model_id or not _MODEL_RE.match(model_id):
        return None
    if model_id in known or model_id.startswith(_KNOWN_MODEL_PREFIXES):
        return model_id
    return None


def parse_output_format(name: str | None) -> AudioFormat:
    """``output_format`` (default mp3_44100_128); unknown names raise ``unsupported_format``."""
    try:
        return parse_format(name or DEFAULT_OUTPUT_FORMAT)
    except AudioUnsupported as e:
        raise UnsupportedFormat(str(e), field="output_format") from e


def query_bool(query: Mapping[str, str], name: str, default: bool | None = None) -> bool | None:
    """A true/false query parameter; a malformed value is an error naming it."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise InvalidRequest(f"query parameter {name} must be true or false, got {raw!r}", field=name)


@dataclass(frozen=True)
class WsQuery:
    """The query parameters of either ElevenLabs TTS WebSocket, validated."""

    model_id: str | None
    fmt: AudioFormat
    inactivity_timeout_s: float
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> WsQuery:
        """Validate ``query``; a bad value raises a typed error (reported after the handshake)."""
        fmt = parse_output_format(query.get("output_format"))
        timeout = DEFAULT_INACTIVITY_S
        if query.get("inactivity_timeout"):
            # Fractions are accepted (ElevenLabs takes whole seconds) so tests can use short timeouts;
            # above the 180 s maximum is clamped, not refused (LiveKit once sent 300).
            try:
                timeout = float(query["inactivity_timeout"])
            except ValueError:
                timeout = math.nan
            if not timeout > 0:
                raise InvalidRequest("inactivity_timeout must be a number of seconds from 1 to 180",
                                     field="inactivity_timeout")
            timeout = min(timeout, MAX_INACTIVITY_S)
        options: dict[str, Any] = {}
        for name in ("sync_alignment", "auto_mode"):
            value = query_bool(query, name)
            if value is not None:
                options[name] = value
        for name in ("language_code", "apply_text_normalization"):
            if query.get(name):
                options[name] = query[name]
        if query.get("seed"):
            try:
                options["seed"] = int(query["seed"])
            except ValueError:
                raise InvalidRequest("seed must be an integer in 0..4294967295", field="seed") from None
        for name in ("enable_logging", "enable_ssml_parsing", "apply_language_text_normalization"):
            query_bool(query, name)  # validated, accepted, no effect here
        return cls(normalize_model(query.get("model_id")), fmt, timeout, options)


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """One client message of either TTS WebSocket; absent fields are None/False."""

    text: str | None = None
    context_id: str | None = None
    flush: bool = False
    close_context: bool = False
    close_socket: bool = False
    # Extension: with ``close_context``, cancel now (no more audio, isFinal at once) instead of finishing.
    immediate: bool = False
    voice_settings: dict[str, Any] | None = None
    chunk_length_schedule: list[float] | None = None
    api_key: str | None = None

    @property
    def is_keepalive(self) -> bool:
        """Empty (or no) text and nothing else to do: resets a timer, never starts speech."""
        return not self.text and not self.flush and not self.close_context and not self.close_socket


def parse_client_message(raw: str) -> ClientMessage:
    """Parse one text frame; malformed input raises ``invalid_json``/``invalid_message``."""
    msg = parse_object(raw)
    text = msg.get("text")
    if text is not None and not isinstance(text, str):
        raise InvalidMessage("text must be a string", field="text")
    cid = msg.get("context_id", msg.get("contextId"))
    if cid is not None and (not isinstance(cid, str) or len(cid) > 256):
        raise InvalidMessage("context_id must be a string of at most 256 characters", field="context_id")
    config = msg.get("generation_config") or msg.get("generator_config")
    schedule = None
    if config is not None:
        if not isinstance(config, dict):
            raise InvalidMessage("generation_config must be an object", field="generation_config")
        schedule = _schedule(config.get("chunk_length_schedule"))
    key = next((msg[k] for k in ("xi_api_key", "xi-api-key", "authorization") if msg.get(k)), None)
    if key is not None and not isinstance(key, str):
        raise InvalidMessage("xi_api_key must be a string", field="xi_api_key")
    return ClientMessage(
        text=text, context_id=cid or None, flush=_flag(msg, "flush"),
        close_context=_flag(msg, "close_context"), close_socket=_flag(msg, "close_socket"),
        immediate=_flag(msg, "immediate"),
        voice_settings=clean_voice_settings(msg.get("voice_settings")), chunk_length_schedule=schedule,
        api_key=key)


def _flag(msg: dict[str, Any], name: str) -> bool:
    value = msg.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidMessage(f"{name} must be a boolean", field=name)
    return value


def _schedule(value: Any) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 50 <= v <= 500 for v in value):
        raise InvalidMessage("chunk_length_schedule must be a non-empty list of numbers from 50 to 500",
                             field="chunk_length_schedule")
    return list(value)


def clean_voice_settings(value: Any) -> dict[str, Any]:
    """``voice_settings`` without null fields; ``null`` and ``{}`` both mean the voice's defaults."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidMessage("voice_settings must be an object", field="voice_settings")
    out: dict[str, Any] = {}
    for name in _VOICE_NUMBERS:
        v = value.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InvalidMessage(f"voice_settings.{name} must be a number", field="voice_settings")
        out[name] = v
    boost = value.get("use_speaker_boost")
    if boost is not None:
        if not isinstance(boost, bool):
            raise InvalidMessage("voice_settings.use_speaker_boost must be a boolean", field="voice_settings")
        out["use_speaker_boost"] = boost
    return out


# ---- server frames -----------------------------------------------------------------------------------
def audio_frames(audio: bytes, alignment: dict[str, Any] | None, context_id: str | None,
                 sample_width: int = 2) -> Iterator[str]:
    """One audio message (more if the chunk is huge: each frame stays under 1 MiB, sample-aligned)."""
    step = MAX_AUDIO_PER_FRAME - MAX_AUDIO_PER_FRAME % max(1, sample_width)
    for start in range(0, max(len(audio), 1), step):
        piece = audio[start:start + step]
        al = norm = alignment if start == 0 else None
        if al is not None and "normalized" in al:  # the provider's own normalized-text timing
            norm = al["normalized"]
            al = {k: v for k, v in al.items() if k != "normalized"}
        rest: dict[str, Any] = {"isFinal": None, "normalizedAlignment": norm, "alignment": al}
        if context_id is not None:
            rest["contextId"] = context_id
        # The base64 is spliced in, not encoded: its alphabet needs no JSON escaping, and json.dumps
        # scanned the ~32 KB string of every chunk (~70 µs, 80 % of this frame's cost, on the path to
        # first audio). The text is the same as json.dumps of the whole frame.
        yield '{"audio":"' + pybase64.b64encode(piece).decode("ascii") + '",' + json.dumps(rest, separators=(",", ":"))[1:]


def final_frame(context_id: str | None, usage: dict[str, Any] | None = None) -> str:
    """The end of a context (multi-stream) or of the stream (stream-input).

    ``usage`` (gateway/metering.py, camelCase) adds extension fields; JSON clients ignore unknown keys.
    """
    frame: dict[str, Any] = {"audio": None, "isFinal": True, "normalizedAlignment": None, "alignment": None}
    if context_id is not None:
        frame["contextId"] = context_id
    if usage:
        frame.update(usage)
    return json.dumps(frame, separators=(",", ":"))


def error_frame(code: str, message: str, *, context_id: str | None = None, close_code: int | None = None) -> str:
    """``{"message", "error", "code"}`` before a close; with ``contextId`` (no close) for one context."""
    frame: dict[str, Any] = {"message": message, "error": code}
    if close_code is not None:
        frame["code"] = close_code
    if context_id is not None:
        frame["contextId"] = context_id
    return json.dumps(frame, separators=(",", ":"))


def close_reason(text: str) -> bytes:
    """``text`` cut (at a character boundary) to what a close frame can carry."""
    return text.encode()[:CLOSE_REASON_LIMIT].decode(errors="ignore").encode()
