"""Output format names (ElevenLabs' ``codec_rate[_kbps]`` scheme) and what each one means on the wire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Codec = Literal["pcm", "ulaw", "alaw", "mp3", "wav", "opus", "aac", "flac"]

# PCM everywhere in this product is signed 16-bit little-endian mono.
PCM_SAMPLE_WIDTH = 2

_PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
_MP3 = ((22050, 32), (24000, 48), (44100, 32), (44100, 64), (44100, 96), (44100, 128), (44100, 192))
# ElevenLabs' Ogg Opus names. AAC and FLAC are our extensions (OpenAI's ``aac``/``flac`` map to the 24 kHz ones).
_OPUS_KBPS = (32, 64, 96, 128, 192)
_AAC = ((24000, 64), (44100, 128), (48000, 128))
# FLAC has no bitrate; speech at these rates compresses to roughly half of PCM16 (measured: 45-60%).
_FLAC_NOMINAL_RATIO = 0.5


class UnsupportedFormat(ValueError):
    """The name is not one of ``SUPPORTED_FORMATS``."""


@dataclass(frozen=True)
class AudioFormat:
    """One output format: codec, sample rate and, for MP3/Opus/AAC, the (target) bitrate."""

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
        if self.codec == "opus":
            return "audio/ogg;codecs=opus"  # RFC 7845: Ogg Opus is audio/ogg
        if self.codec == "aac":
            return "audio/aac"
        if self.codec == "flac":
            return "audio/flac"
        return "audio/wav"

    @property
    def bytes_per_sample(self) -> int | None:
        """Bytes per (mono) sample on the wire; None for compressed codecs, which have no per-sample boundary."""
        if self.codec in ("pcm", "wav"):
            return PCM_SAMPLE_WIDTH
        if self.codec in ("ulaw", "alaw"):
            return 1
        return None

    @property
    def bytes_per_second(self) -> int:
        """Steady-state payload rate: samples x width, or the bitrate (nominal for VBR Opus/AAC and for FLAC).

        Exact for PCM, G.711, WAV (header excluded) and CBR MP3; an estimate for the others, used only
        for metrics. Where exact playing time matters (alignment offsets), use ``shared.audio.clock``.
        """
        if self.bitrate_kbps is not None:
            return self.bitrate_kbps * 1000 // 8
        if self.codec == "flac":
            return int(self.sample_rate * PCM_SAMPLE_WIDTH * _FLAC_NOMINAL_RATIO)
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
    formats += [AudioFormat(f"opus_48000_{kbps}", "opus", 48000, kbps) for kbps in _OPUS_KBPS]
    formats += [AudioFormat(f"aac_{r}_{kbps}", "aac", r, kbps) for r, kbps in _AAC]
    formats += [AudioFormat(f"flac_{r}", "flac", r) for r in _PCM_RATES]
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
