"""ElevenLabs WebSocket wire details: query parameters, server frames, error texts and voice settings."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emulator.formats import OutputFormatError, parse_output_format
from shared.audio import AudioFormat

MAX_INACTIVITY_TIMEOUT_S = 180.0
CLOSE_REASON_LIMIT = 123  # a close frame carries 125 payload bytes, two of them the code

VOICE_SETTINGS_MESSAGE = "voice_settings field must be provided in the first message and then either be not provided or not change."
INVALID_API_KEY_MESSAGE = "Invalid API key"
MISSING_API_KEY_MESSAGE = "You must be authorized to use this endpoint: pass xi-api-key."


def max_contexts_message(limit: int) -> str:
    """The ``max_active_conversations`` text, naming the cap."""
    return (
        f"Maximum simultaneous contexts per WebSocket connection exceeded ({limit}). "
        "Please close an existing context before opening a new one."
    )


def inactivity_message(timeout_s: float) -> str:
    """The text ElevenLabs closes an idle stream with (elevenlabs-docs #426)."""
    shown = int(timeout_s) if float(timeout_s).is_integer() else timeout_s
    return (
        f"Have not received a new text input within the timeout of {shown} seconds. Streaming input "
        "terminated. Please make sure to either feed the input in the timely manner, or to send the end "
        'of input text (empty string "") when done.'
    )


def voice_not_found_message(voice_id: str) -> str:
    """Text for a voice id the emulator is told to reject."""
    return f"A voice with voice_id '{voice_id}' does not exist."


class ProtocolViolation(Exception):
    """A client error that ends the socket: an error frame, then close 1008."""

    def __init__(self, error: str, message: str, close_code: int = 1008) -> None:
        """``error`` is ElevenLabs' code string (e.g. ``invalid_input_message``)."""
        super().__init__(message)
        self.error = error
        self.message = message
        self.close_code = close_code


def close_reason(text: str) -> bytes:
    """``text`` as a close reason, cut (at a character boundary) to what a close frame can carry."""
    raw = text.encode()
    if len(raw) <= CLOSE_REASON_LIMIT:
        return raw
    return raw[:CLOSE_REASON_LIMIT].decode(errors="ignore").encode()


def error_frame(error: str, message: str, code: int = 1008) -> dict[str, Any]:
    """The JSON error frame sent just before a 1008 close."""
    return {"message": message, "error": error, "code": code}


def audio_frame(b64_audio: bytes, alignment: dict[str, Any] | None, context_id: str | None = None) -> bytes:
    """An audio chunk as the UTF-8 payload of a JSON text frame; ``contextId`` only on multi-stream.
    normalizedAlignment repeats alignment.

    Assembled by hand rather than by ``json.dumps``: the encoder would scan the ~30 KB of base64 for
    characters to escape (there are none), which cost more than everything else a chunk needs. Bytes
    with one join, so the base64 is copied once on its way to the socket (a str would be built, then
    encoded). The payload is exactly what ``json.dumps`` gives for the same object, encoded.
    """
    timing = b"null" if alignment is None else json.dumps(alignment).encode()
    tail = b"}" if context_id is None else b', "contextId": ' + json.dumps(context_id).encode() + b"}"
    return b"".join((b'{"audio": "', b64_audio, b'", "isFinal": null, "normalizedAlignment": ', timing,
                     b', "alignment": ', timing, tail))


def final_frame(context_id: str | None = None) -> dict[str, Any]:
    """The end-of-context (multi-stream) or end-of-stream (stream-input) message."""
    frame: dict[str, Any] = {"audio": None, "isFinal": True, "normalizedAlignment": None, "alignment": None}
    if context_id is not None:
        frame["contextId"] = context_id
    return frame


_VOICE_DEFAULTS: dict[str, Any] = {
    "stability": 0.5,
    "similarity_boost": 0.75,
    "style": 0.0,
    "use_speaker_boost": True,
    "speed": 1.0,
}

VoiceSettings = tuple[tuple[str, Any], ...]


def normalize_voice_settings(value: Any) -> VoiceSettings | None:
    """Canonical form for comparing voice_settings: None when absent/null, defaults filled for null fields."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolViolation("invalid_input_message", "voice_settings must be an object")
    merged = dict(_VOICE_DEFAULTS)
    merged.update({k: v for k, v in value.items() if v is not None})
    speed = merged["speed"]
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.7 <= speed <= 1.2:
        raise ProtocolViolation("invalid_input_message", "voice_settings.speed must be between 0.7 and 1.2")
    return tuple(sorted((k, _hashable(v)) for k, v in merged.items()))


def _hashable(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)  # 1 and 1.0 are the same setting
    return repr(value) if isinstance(value, dict | list) else value


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _bool(query: Mapping[str, str], name: str, default: bool) -> bool:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ProtocolViolation("invalid_request", f"Query parameter {name} must be true or false, got {raw!r}.")


@dataclass(frozen=True)
class WsParams:
    """The query parameters of either TTS WebSocket, validated."""

    model_id: str | None
    output_format: AudioFormat
    inactivity_timeout_s: float
    sync_alignment: bool
    auto_mode: bool
    apply_text_normalization: str
    language_code: str | None
    enable_logging: bool
    enable_ssml_parsing: bool
    seed: int | None

    @classmethod
    def parse(cls, query: Mapping[str, str], default_timeout_s: float) -> WsParams:
        """Validate ``query``; a bad value raises :class:`ProtocolViolation` (reported after the handshake)."""
        try:
            fmt = parse_output_format(query.get("output_format"))
        except OutputFormatError as e:
            raise ProtocolViolation(e.code, str(e)) from e
        timeout = default_timeout_s
        if query.get("inactivity_timeout"):
            # Fractions are accepted (the API takes whole seconds) so tests can use short timeouts.
            try:
                timeout = float(query["inactivity_timeout"])
            except ValueError:
                timeout = math.nan
            if not 0 < timeout <= MAX_INACTIVITY_TIMEOUT_S:
                raise ProtocolViolation(
                    "invalid_request",
                    f"inactivity_timeout must be between 1 and {int(MAX_INACTIVITY_TIMEOUT_S)} seconds.",
                )
        normalization = query.get("apply_text_normalization") or "auto"
        if normalization not in ("auto", "on", "off"):
            raise ProtocolViolation("invalid_request", "apply_text_normalization must be auto, on or off.")
        seed: int | None = None
        if query.get("seed"):
            try:
                seed = int(query["seed"])
            except ValueError:
                seed = -1
            if not 0 <= seed <= 4294967295:
                raise ProtocolViolation(
                    "invalid_request", "seed must be an integer between 0 and 4294967295."
                )
        return cls(
            # Unknown model ids (even the SDK's literal "Ellipsis") are accepted: the emulator has one voice.
            model_id=query.get("model_id") or None,
            output_format=fmt,
            inactivity_timeout_s=timeout,
            sync_alignment=_bool(query, "sync_alignment", False),
            auto_mode=_bool(query, "auto_mode", False),
            apply_text_normalization=normalization,
            language_code=query.get("language_code") or None,
            enable_logging=_bool(query, "enable_logging", True),
            enable_ssml_parsing=_bool(query, "enable_ssml_parsing", False),
            seed=seed,
        )
