"""ElevenLabs ``multi-stream-input`` frames: what we send, what we receive, and what a close means.

Every client message we build names a ``context_id`` we initialised ourselves (except
``close_socket``): a message without one targets a server-side default context whose place in
the 5-context cap is unconfirmed, so we never send one. Audio is base64-decoded exactly once, here.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

from shared.errors import (
    TTSError,
    UpstreamBusy,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
)
from shared.retry import decide

# -- client -> server --------------------------------------------------------------------------------


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def init_context(context_id: str, voice_settings: dict[str, Any] | None,
                 generation_config: dict[str, Any] | None) -> str:
    """The first message of a context: fixes its voice settings for its whole life."""
    msg: dict[str, Any] = {"text": " ", "context_id": context_id}
    if voice_settings:
        msg["voice_settings"] = voice_settings
    if generation_config:
        msg["generation_config"] = generation_config
    return _dump(msg)


def send_text(context_id: str, text: str, flush: bool = False) -> str:
    """Append text to a context's buffer (``flush`` generates everything buffered now)."""
    msg: dict[str, Any] = {"text": text, "context_id": context_id}
    if flush:
        msg["flush"] = True
    return _dump(msg)


def flush(context_id: str) -> str:
    """Generate what is buffered; the context stays open (no ``isFinal`` follows)."""
    return _dump({"text": "", "context_id": context_id, "flush": True})


def keep_alive(context_id: str) -> str:
    """Reset an initialised context's inactivity timer (empty text is otherwise ignored)."""
    return _dump({"text": "", "context_id": context_id})


def close_context(context_id: str) -> str:
    """No more text for this context: the server finishes it and sends its final."""
    return _dump({"context_id": context_id, "close_context": True})


def close_socket() -> str:
    """Finish flushing contexts, then the server closes the socket."""
    return _dump({"close_socket": True})


def context_of(msg: str) -> str | None:
    """The ``context_id`` a message built here names (None for ``close_socket``)."""
    value = json.loads(msg).get("context_id")
    return value if isinstance(value, str) else None


# -- server -> client --------------------------------------------------------------------------------


class MalformedFrame(ValueError):
    """A frame that is not a JSON object: the socket's stream can no longer be trusted."""


@dataclass(slots=True)
class ServerFrame:
    """One decoded server frame (audio bytes already decoded, alignment keys canonical)."""

    context_id: str | None
    audio: bytes | None = None
    is_final: bool = False
    alignment: dict[str, Any] | None = None
    error: str | None = None  # server error code, e.g. "max_active_conversations"
    message: str | None = None  # server error text (never echoed to clients verbatim)
    bad_audio: bool = False  # the frame named a context but its audio was not valid base64


_ALIGN_KEYS = (
    ("chars", ("chars", "characters")),
    ("charStartTimesMs", ("charStartTimesMs", "charsStartTimesMs")),
    ("charDurationsMs", ("charDurationsMs", "charsDurationsMs")),
)


def _alignment(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    for canonical, names in _ALIGN_KEYS:
        for name in names:
            value = raw.get(name)
            if isinstance(value, list):
                out[canonical] = value
                break
        else:
            return None
    if not out["chars"]:
        return None
    return out


def parse_frame(data: str | bytes) -> ServerFrame:
    """Decode one text frame; raise :class:`MalformedFrame` if it is not a JSON object."""
    try:
        # orjson: ~30 KB frames (base64 audio) parse several times faster than with json, and it
        # raises ValueError subclasses for the same malformed input.
        obj = orjson.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedFrame("frame is not JSON") from e
    if not isinstance(obj, dict):
        raise MalformedFrame("frame is not a JSON object")
    ctx = obj.get("contextId", obj.get("context_id"))
    frame = ServerFrame(context_id=ctx if isinstance(ctx, str) else None)
    final = obj.get("isFinal", obj.get("is_final"))
    frame.is_final = final is True
    audio = obj.get("audio")
    if isinstance(audio, str) and audio:
        try:
            frame.audio = pybase64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            frame.bad_audio = True
    elif audio is not None and not isinstance(audio, str):
        frame.bad_audio = True
    if frame.audio is not None:
        # ``alignment`` follows the text we sent; ``normalizedAlignment`` only when that is missing.
        original, normalized = _alignment(obj.get("alignment")), _alignment(obj.get("normalizedAlignment"))
        frame.alignment = original or normalized
        if original is not None and normalized is not None and normalized != original:
            # The normalized text's own timing (numbers spelled out...) rides along for the edges that
            # send ``normalizedAlignment``; dropped where a converter merges chunks (then it is the original).
            original["normalized"] = normalized
    err = obj.get("error")
    if err is not None or (obj.get("message") and frame.audio is None and not frame.is_final):
        frame.error = str(err) if err is not None else "error"
        msg = obj.get("message")
        frame.message = str(msg) if msg is not None else None
    return frame


# -- what a socket's end means -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a socket (or one context) ended: a metric label and the client-facing error."""

    reason: str
    error: TTSError

    @property
    def retry(self) -> bool:
        """Is this about the socket, not the request (so contexts without audio may move elsewhere)?

        The retry policy's answer for a first attempt: False when the same request would only fail
        again (bad voice, key, quota, settings).
        """
        return decide(self.error.code, audio_sent=False, attempt=1, asker="worker_pool")

    def for_context(self, audio_sent: bool) -> TTSError:
        """The error a context on the failed socket ends with (a fresh instance per context)."""
        details = dict(self.error.details)
        details["audio_sent"] = audio_sent
        return type(self.error)(self.error.message, **details)


def _has(text: str, *needles: str) -> bool:
    return any(n in text for n in needles)


def classify_close(code: int | None, reason: str, error: str | None = None,
                   message: str | None = None) -> Failure:
    """Map a close (code + reason, plus the error frame that preceded it, if any) to a :class:`Failure`.

    ``code`` None means the connection was lost without a close frame.
    """
    text = " ".join(p for p in (error, message, reason) if p).lower()
    detail = {"close_code": code, "upstream_error": error} if error else {"close_code": code}
    if code is None or code == 1006:
        return Failure("dropped", UpstreamDisconnected("upstream connection lost", **detail))
    if _has(text, "max_active_conversations", "maximum simultaneous contexts"):
        return Failure("context_cap", UpstreamDisconnected("upstream context limit hit", **detail))
    if _has(text, "voice_not_found", "invalid_voice", "invalid voice", "voice not found") \
            or ("voice" in text and "does not exist" in text):
        return Failure("invalid_voice", UpstreamRejected("upstream rejected the voice", **detail))
    if _has(text, "quota"):
        return Failure("quota", UpstreamRejected("upstream quota exhausted", **detail))
    if _has(text, "api_key", "api key", "api-key", "unauthorized", "authorized", "invalid_auth"):
        return Failure("auth", UpstreamRejected("upstream refused the API key", **detail))
    if _has(text, "voice_settings", "invalid_output_format", "unsupported_output_format", "output format",
            "model_id", "model_not_found", "invalid model", "language_code", "generation_config",
            "chunk_length_schedule", "invalid_request"):
        return Failure("bad_settings", UpstreamRejected("upstream rejected the settings", **detail))
    if _has(text, "too_many_concurrent", "system_busy", "concurrent"):
        return Failure("busy", UpstreamBusy("upstream is at its concurrency limit", **detail))
    if _has(text, "timeout", "have not received"):
        return Failure("inactivity", UpstreamDisconnected("upstream closed an idle socket", **detail))
    if _has(text, "invalid_input_message"):
        return Failure("invalid_input", UpstreamError("upstream rejected a message", **detail))
    if code in (1000, 1001):
        return Failure("closed", UpstreamDisconnected("upstream closed the socket", **detail))
    return Failure("server_error", UpstreamDisconnected("upstream failed", **detail))


def classify_handshake(status: int | None) -> Failure:
    """Map a failed WebSocket handshake (HTTP status, None for a network error) to a :class:`Failure`."""
    if status in (401, 403):
        return Failure("auth", UpstreamRejected("upstream refused the API key", http_status=status))
    if status in (400, 404, 422):
        return Failure("rejected", UpstreamRejected("upstream rejected the request", http_status=status))
    if status == 429:
        return Failure("busy", UpstreamBusy("upstream is at its concurrency limit", http_status=status))
    return Failure("connect_failed", UpstreamDisconnected("could not connect upstream", http_status=status))


MALFORMED = Failure("malformed_frame", UpstreamError("upstream sent a malformed frame"))
STALLED = Failure("stalled", UpstreamTimeout("upstream stopped sending audio"))
