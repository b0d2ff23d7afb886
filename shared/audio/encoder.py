"""The one output pipeline every producer uses: PCM16 at the source rate -> target rate -> target codec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from shared.audio.formats import AudioFormat
from shared.audio.g711 import alaw_encode, ulaw_encode
from shared.audio.mp3 import Mp3StreamEncoder
from shared.audio.resample import StreamResampler
from shared.audio.wav import streaming_wav_header


class StreamEncoder(Protocol):
    """A streaming codec: PCM16 in, whole frames/pages out; ``flush()`` ends the stream."""

    def encode(self, pcm16: bytes) -> bytes:
        """Feed PCM16 (any byte length); return the output completed so far."""
        ...

    def flush(self) -> bytes:
        """End the stream and return the rest."""
        ...


class OutputEncoder:
    """Turn a stream of PCM16 mono chunks at ``source_rate`` into the bytes of ``fmt``.

    Every returned chunk is sample-aligned (2 bytes for pcm/wav, 1 for ulaw/alaw) or, for MP3, whole
    frames (Ogg pages for Opus, ADTS frames for AAC, FLAC frames after the stream's own header), so a
    consumer may forward each chunk as it comes and stop at any chunk boundary. For WAV,
    the first call to ``feed()`` or ``finish()`` returns the streaming RIFF header before any audio,
    even when no audio is ready yet: a client gets its header without waiting for the resampler, and
    there is exactly one header per stream. One encoder serves one stream; ``finish()`` ends it.
    """

    def __init__(self, source_rate: int, fmt: AudioFormat) -> None:
        """Encode PCM16 mono at ``source_rate`` Hz into ``fmt``."""
        self.source_rate = source_rate
        self.format = fmt
        self._resampler = StreamResampler(source_rate, fmt.sample_rate)
        self._codec: StreamEncoder | None = None
        self._g711: Callable[[bytes], bytes] | None = None
        if fmt.codec == "mp3":
            assert fmt.bitrate_kbps is not None
            self._codec = Mp3StreamEncoder(fmt.sample_rate, fmt.bitrate_kbps)
        elif fmt.codec in ("opus", "aac", "flac"):
            # Imported here: PyAV loads FFmpeg's libraries, which a process that never encodes these
            # (the gateway) should not pay for.
            from shared.audio.avcodec import AvStreamEncoder

            self._codec = AvStreamEncoder(fmt.codec, fmt.sample_rate, fmt.bitrate_kbps)
        elif fmt.codec == "ulaw":
            self._g711 = ulaw_encode
        elif fmt.codec == "alaw":
            self._g711 = alaw_encode
        self._header = streaming_wav_header(fmt.sample_rate) if fmt.codec == "wav" else b""
        self._finished = False

    @property
    def passthrough(self) -> bool:
        """True when output bytes are the input bytes (PCM at the source rate): no filter, no delay."""
        return self.format.codec == "pcm" and self._resampler.passthrough

    def feed(self, pcm16: bytes) -> bytes:
        """Encode one chunk of PCM16 (any byte length); return the output ready so far, maybe empty."""
        if self._finished:
            raise RuntimeError("OutputEncoder.feed() after finish()")
        # Passthrough needs no branch here: the resampler then only carries odd bytes and the codec is identity.
        return self._take_header() + self._encode(self._resampler.process(pcm16))

    def finish(self) -> bytes:
        """End the stream: return the resampler's and encoder's tails (a dangling half sample is dropped)."""
        if self._finished:
            return b""
        self._finished = True
        out = self._take_header() + self._encode(self._resampler.flush())
        if self._codec is not None:
            out += self._codec.flush()
        return out

    def _take_header(self) -> bytes:
        header, self._header = self._header, b""
        return header

    def _encode(self, pcm16: bytes) -> bytes:
        if not pcm16:
            return b""
        if self._codec is not None:
            return self._codec.encode(pcm16)
        if self._g711 is not None:
            return self._g711(pcm16)
        return pcm16
