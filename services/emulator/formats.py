"""Output formats the emulator serves: ElevenLabs' names, encoded with the product's shared audio codecs."""

from __future__ import annotations

from shared.audio import AudioFormat, OutputEncoder, UnsupportedFormat, parse_format

DEFAULT_WS_FORMAT = "mp3_44100_128"
DEFAULT_HTTP_FORMAT = "mp3_44100_128"

# In ElevenLabs' enum but not produced here (no Opus encoder in the stack): refused, not mislabelled.
KNOWN_UNSUPPORTED: frozenset[str] = frozenset(f"opus_48000_{kbps}" for kbps in (32, 64, 96, 128, 192))
# Codecs the shared module offers that ElevenLabs itself does not (``wav_*`` is the gateway's extension).
_ELEVENLABS_CODECS = frozenset({"pcm", "ulaw", "alaw", "mp3"})


class OutputFormatError(ValueError):
    """The requested ``output_format`` is unknown, or known to ElevenLabs but not emulated."""

    def __init__(self, name: str, code: str) -> None:
        """Describe ``name``; ``code`` is ``invalid_output_format`` or ``unsupported_output_format``."""
        self.name = name
        self.code = code
        if code == "unsupported_output_format":
            message = f"Output format {name!r} is not supported by the emulator."
        else:
            message = f"Invalid output format {name!r}."
        super().__init__(message)


def parse_output_format(name: str | None, default: str = DEFAULT_WS_FORMAT) -> AudioFormat:
    """Resolve an ``output_format`` query value (None or empty means ``default``)."""
    name = name or default
    if name in KNOWN_UNSUPPORTED:
        raise OutputFormatError(name, "unsupported_output_format")
    try:
        fmt = parse_format(name)
    except UnsupportedFormat:
        raise OutputFormatError(name, "invalid_output_format") from None
    if fmt.codec not in _ELEVENLABS_CODECS:
        raise OutputFormatError(name, "invalid_output_format")
    return fmt


def new_encoder(fmt: AudioFormat) -> OutputEncoder:
    """An encoder for one generation; audio is synthesized at the format's own rate, so no resampling."""
    return OutputEncoder(fmt.sample_rate, fmt)
