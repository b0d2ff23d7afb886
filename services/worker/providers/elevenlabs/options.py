"""Turn a :class:`SynthesisRequest` into what ElevenLabs needs: the socket it must use, its first message
and the conversion from the upstream audio to the requested format.

Everything in the socket URL (voice in the path, model, format and query options) is part of the
:class:`SocketKey`: contexts with different keys never share a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from shared.audio import OutputEncoder, parse_format
from shared.audio import UnsupportedFormat as _FormatNameError
from shared.audio.formats import AudioFormat
from shared.errors import InvalidRequest, UnknownVoice, UnsupportedFormat
from shared.settings import Settings
from shared.voice_ids import check_voice_id

DEFAULT_FORMAT = "pcm_24000"

# What the multi-stream socket produces itself. pcm_32000/pcm_48000 are not in ElevenLabs' WS enum,
# but LiveKit and pipecat send them; mp3_24000_48 appears only in the SDK, so we encode it ourselves.
NATIVE_FORMATS: frozenset[str] = frozenset(
    [f"pcm_{r}" for r in (8000, 16000, 22050, 24000, 32000, 44100, 48000)]
    + ["ulaw_8000", "alaw_8000", "mp3_22050_32"]
    + [f"mp3_44100_{k}" for k in (32, 64, 96, 128, 192)]
)
_VOICE_SETTING_KEYS = ("stability", "similarity_boost", "style", "use_speaker_boost", "speed")
_NORMALIZATION = ("auto", "on", "off")


@dataclass(frozen=True, slots=True)
class SocketKey:
    """Everything the ``multi-stream-input`` URL fixes for every context on the socket."""

    voice_id: str
    model_id: str
    output_format: str  # upstream format name (always one of NATIVE_FORMATS)
    inactivity_timeout: int
    sync_alignment: bool = False
    auto_mode: bool = False
    language_code: str | None = None
    apply_text_normalization: str | None = None
    seed: int | None = None

    def url(self, ws_base: str) -> str:
        """The socket URL under ``ws_base`` (``wss://host``, with or without a trailing ``/v1``)."""
        base = ws_base.rstrip("/")
        base = base.removesuffix("/v1")
        query: dict[str, str] = {
            "model_id": self.model_id,
            "output_format": self.output_format,
            "inactivity_timeout": str(self.inactivity_timeout),
            "sync_alignment": _bool(self.sync_alignment),
            "auto_mode": _bool(self.auto_mode),
        }
        if self.language_code:
            query["language_code"] = self.language_code
        if self.apply_text_normalization:
            query["apply_text_normalization"] = self.apply_text_normalization
        if self.seed is not None:
            query["seed"] = str(self.seed)
        voice = quote(check_voice_id(self.voice_id), safe="")
        return f"{base}/v1/text-to-speech/{voice}/multi-stream-input?{urlencode(query)}"

    def label(self) -> dict[str, str]:
        """Loggable description (no secrets, no text)."""
        return {"voice_id": self.voice_id, "model_id": self.model_id, "upstream_format": self.output_format}


def _bool(v: bool) -> str:
    return "true" if v else "false"


@dataclass(frozen=True, slots=True)
class ContextSpec:
    """A validated request: the socket key, the first message's fields and the output format."""

    key: SocketKey
    voice_settings: dict[str, Any] | None
    generation_config: dict[str, Any] | None
    output: AudioFormat


def default_key(settings: Settings) -> SocketKey:
    """The key prewarmed at start: default voice and model, ``pcm_24000``, no options."""
    return SocketKey(settings.default_voice, settings.elevenlabs_model, DEFAULT_FORMAT,
                     settings.upstream_inactivity_timeout_s)


def upstream_format(fmt: AudioFormat) -> str:
    """The format to ask ElevenLabs for: the same one if it streams it, else PCM at the target rate."""
    if fmt.name in NATIVE_FORMATS:
        return fmt.name
    return f"pcm_{fmt.sample_rate}"


def build_spec(voice_id: str, model_id: str, output_format: str, voice_settings: dict[str, Any],
               options: dict[str, Any], settings: Settings) -> ContextSpec:
    """Validate a request's fields; raise UnknownVoice, UnsupportedFormat or InvalidRequest."""
    voice = voice_id or settings.default_voice
    if not voice:
        raise UnknownVoice("no voice given and no DEFAULT_VOICE configured")
    # The gateway checked it already; checked again because it becomes a path segment of a URL that
    # carries the API key (``..`` would name another endpoint).
    check_voice_id(voice)
    try:
        fmt = parse_format(output_format or DEFAULT_FORMAT)
    except _FormatNameError as e:
        raise UnsupportedFormat(str(e)) from e
    key = SocketKey(
        voice_id=voice,
        model_id=model_id or settings.elevenlabs_model,
        output_format=upstream_format(fmt),
        inactivity_timeout=settings.upstream_inactivity_timeout_s,
        sync_alignment=_opt_bool(options, "sync_alignment"),
        auto_mode=_opt_bool(options, "auto_mode"),
        language_code=_opt_language(options),
        apply_text_normalization=_opt_normalization(options),
        seed=_opt_seed(options),
    )
    return ContextSpec(key, _voice_settings(voice_settings, options), _generation_config(options), fmt)


def _opt_bool(options: dict[str, Any], name: str) -> bool:
    value = options.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be a boolean")
    return value


def _opt_language(options: dict[str, Any]) -> str | None:
    value = options.get("language_code")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not (2 <= len(value) <= 8) or not value.replace("-", "").isalpha():
        raise InvalidRequest("language_code must be an ISO 639-1 code such as 'en'")
    return value


def _opt_normalization(options: dict[str, Any]) -> str | None:
    value = options.get("apply_text_normalization")
    if value is None:
        return None
    if value not in _NORMALIZATION:
        raise InvalidRequest("apply_text_normalization must be one of auto, on, off")
    return None if value == "auto" else str(value)  # the default: same URL, same sockets


def _opt_seed(options: dict[str, Any]) -> int | None:
    value = options.get("seed")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4294967295:
        raise InvalidRequest("seed must be an integer in 0..4294967295")
    return value


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be a number in {low}..{high}")
    return value


def _voice_settings(voice_settings: dict[str, Any], options: dict[str, Any]) -> dict[str, Any] | None:
    if not isinstance(voice_settings, dict):
        raise InvalidRequest("voice_settings must be an object")
    out: dict[str, Any] = {}
    for name in _VOICE_SETTING_KEYS:
        value = voice_settings.get(name)
        if value is None:
            continue
        if name == "use_speaker_boost":
            if not isinstance(value, bool):
                raise InvalidRequest("voice_settings.use_speaker_boost must be a boolean")
            out[name] = value
        elif name == "speed":
            out[name] = _number("voice_settings.speed", value, 0.7, 1.2)
        else:
            out[name] = _number(f"voice_settings.{name}", value, 0.0, 1.0)
    if options.get("speed") is not None:
        out["speed"] = _number("speed", options["speed"], 0.7, 1.2)
    return out or None


def _generation_config(options: dict[str, Any]) -> dict[str, Any] | None:
    schedule = options.get("chunk_length_schedule")
    if schedule is None:
        return None
    if not isinstance(schedule, list | tuple) or not schedule:
        raise InvalidRequest("chunk_length_schedule must be a non-empty list of numbers")
    values = [_number("chunk_length_schedule", v, 50, 500) for v in schedule]
    return {"chunk_length_schedule": values}


class AudioOut:
    """Upstream audio bytes -> the requested format, every output chunk sample-aligned.

    Native formats pass through (PCM carries a dangling odd byte to the next chunk); others (``wav_*``,
    ``mp3_24000_48``) are encoded from upstream PCM by the shared :class:`OutputEncoder`.
    """

    def __init__(self, fmt: AudioFormat, upstream: str) -> None:
        """Convert audio arriving as ``upstream`` into ``fmt``."""
        self._encoder: OutputEncoder | None = None
        self._align = 1
        self._upstream_rate = parse_format(upstream).sample_rate
        if fmt.name != upstream:
            self._encoder = OutputEncoder(self._upstream_rate, fmt)
        elif fmt.codec == "pcm":
            self._align = 2
        self._carry = b""

    @property
    def converting(self) -> bool:
        """True when audio is re-encoded (and an output chunk may lag its upstream chunk)."""
        return self._encoder is not None

    def upstream_ms(self, data: bytes) -> float:
        """Playing time of an upstream PCM chunk (only meaningful when converting)."""
        return len(data) * 1000.0 / (2 * self._upstream_rate)

    def feed(self, data: bytes) -> bytes:
        """Convert one upstream chunk; may return b"" while a converter fills."""
        if self._encoder is not None:
            return self._encoder.feed(data)
        if self._align == 1:
            return data
        if self._carry:
            data = self._carry + data
        cut = len(data) - len(data) % self._align
        self._carry = data[cut:]
        return data[:cut]

    def finish(self) -> bytes:
        """The converter's tail at the end of the stream (a dangling half sample is dropped)."""
        self._carry = b""
        if self._encoder is not None:
            return self._encoder.finish()
        return b""
