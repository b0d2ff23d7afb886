"""Output format names (ElevenLabs' ``codec_rate[_kbps]`` scheme) and what each one means on the wire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Codec = Literal["pcm", "ulaw", "alaw", "mp3", "wav"]

# PCM everywhere in this product is signed 16-bit little-endian mono.
PCM_SAMPLE_WIDTH = 2

_PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
_MP3 = ((22050, 32), (24000, 48), (44100, 32), (44100, 64), (44100, 96), (44100, 128), (44100, 192))


class UnsupportedFormat(ValueError):
    """The name is not one of ``SUPPORTED_FORMATS``."""


@dataclass(frozen=True)
class AudioFormat:
    """One output format: codec, sample rate and, for MP3, the constant bitrate."""

    name: str
    codec: Codec
    sample_rate: int
    bitrate_kbps: int | None = None

    @property
    def content_type(self) -> str:
        """The HTTP Content-Type for a body in this format.

        PCM is ``audio/pcm`` with rate and channel parameters, not ``audio/L16``: RFC 2586 defines L16
        as big-endian, and ours is little-endian. μ-law is ``audio/basic`` (RFC 2046: 8 kHz mono μ-law);
        A-law is the IANA-registered ``audio/PCMA`` (RFC 4856) rather than the unregistered
        ``audio/x-alaw-basic``.
        """
        if self.codec == "pcm":
            return f"audio/pcm;rate={self.sample_rate};channels=1"
        if self.codec == "ulaw":
            return "audio/basic"
        if self.codec == "alaw":
            return f"audio/PCMA;rate={self.sample_rate}"
        if self.codec == "mp3":
            return "audio/mpeg"
        return "audio/wav"

    @property
    def bytes_per_sample(self) -> int | None:
        """Bytes per (mono) sample on the wire; None for MP3, which has no per-sample boundary."""
        if self.codec in ("pcm", "wav"):
            return PCM_SAMPLE_WIDTH
        if self.codec in ("ulaw", "alaw"):
            return 1
        return None

    @property
    def bytes_per_second(self) -> int:
        """Steady-state payload rate: samples x width, or the constant bitrate for MP3 (WAV header excluded)."""
        if self.bitrate_kbps is not None:
            return self.bitrate_kbps * 1000 // 8
        assert self.bytes_per_sample is not None
        return self.sample_rate * self.bytes_per_sample

    @property
    def is_raw(self) -> bool:
        """True when any sample-aligned cut of the stream is itself playable (no header, no frames)."""
        return self.codec in ("pcm", "ulaw", "alaw")


def _build() -> dict[str, AudioFormat]:
    formats: list[AudioFormat] = []
    formats += [AudioFormat(f"pcm_{r}", "pcm", r) for r in _PCM_RATES]
    formats += [AudioFormat("ulaw_8000", "ulaw", 8000), AudioFormat("alaw_8000", "alaw", 8000)]
    # WAV is our extension: the PCM stream behind one streaming RIFF header, for players that need a container.
    formats += [AudioFormat(f"wav_{r}", "wav", r) for r in _PCM_RATES]
    formats += [AudioFormat(f"mp3_{r}_{kbps}", "mp3", r, kbps) for r, kbps in _MP3]
    return {f.name: f for f in formats}


_FORMATS = _build()

SUPPORTED_FORMATS: tuple[str, ...] = tuple(_FORMATS)


def parse_format(name: str) -> AudioFormat:
    """Return the format called ``name`` (exact, lower-case), or raise ``UnsupportedFormat``."""
    try:
        return _FORMATS[name]
    except (KeyError, TypeError):
        raise UnsupportedFormat(
            f"unsupported output format {name!r}; supported: {', '.join(SUPPORTED_FORMATS)}"
        ) from None
