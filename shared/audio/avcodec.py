"""Streaming Ogg Opus, AAC (ADTS) and FLAC through FFmpeg's own encoders and muxers, via PyAV.

Hand-written encoders for these are out of the question (§6): PyAV's wheels bundle FFmpeg with
libopus, FFmpeg's native AAC encoder and FLAC, and need no system library. Each stream gets its own
encoder and muxer writing into an in-memory sink; after every packet the muxer flushes
(``flush_packets``), so what ``encode()`` returns always ends at a page (Ogg) or frame (ADTS, FLAC)
boundary and a client may forward it as it comes. The sink is not seekable, so the FLAC muxer never
goes back to patch its header: STREAMINFO says "length unknown", which every decoder accepts
(FFmpeg's FLAC muxer also writes an 8 KiB PADDING block into that header; harmless, once per stream).
"""

from __future__ import annotations

from typing import Literal

import av
import numpy as np

from shared.audio.align import SampleAligner
from shared.audio.formats import PCM_SAMPLE_WIDTH

AvCodec = Literal["opus", "aac", "flac"]

# codec -> (FFmpeg encoder, FFmpeg muxer). Opus in OpenAI's and ElevenLabs' APIs is Ogg Opus; AAC is
# ADTS (self-framing, playable when cut); FLAC is a native FLAC stream.
_CODECS: dict[str, tuple[str, str]] = {"opus": ("libopus", "ogg"), "aac": ("aac", "adts"), "flac": ("flac", "flac")}
# One Ogg page per 20 ms Opus packet: the default (one page a second) would hold audio back for a second.
_OGG_PAGE_US = "20000"
# FLAC's default block for these rates is 4608 samples (~100-200 ms held back); 1152 costs ~1% in size.
_FLAC_BLOCK = 1152


class _Sink:
    """A write-only, non-seekable file the muxer writes into; ``take()`` hands the bytes on."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


class AvStreamEncoder:
    """Encode a PCM16 mono stream to Ogg Opus, ADTS AAC or FLAC, returning whole pages/frames."""

    def __init__(self, codec: AvCodec, sample_rate: int, bitrate_kbps: int | None = None) -> None:
        """Encode ``sample_rate`` Hz mono PCM16 as ``codec`` (Opus needs 8/12/16/24/48 kHz)."""
        if codec not in _CODECS:
            raise ValueError(f"unknown codec {codec!r}")
        encoder, muxer = _CODECS[codec]
        self.codec = codec
        self.sample_rate = sample_rate
        self._sink = _Sink()
        options = {"flush_packets": "1"}
        if muxer == "ogg":
            options["page_duration"] = _OGG_PAGE_US
        self._container = av.open(self._sink, mode="w", format=muxer, options=options)
        stream = self._container.add_stream(encoder, rate=sample_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        self._stream = stream
        if bitrate_kbps:
            self._stream.bit_rate = bitrate_kbps * 1000
        if codec == "flac":
            self._stream.codec_context.options = {"frame_size": str(_FLAC_BLOCK)}
        # Write the stream headers now (Ogg's OpusHead/OpusTags pages, FLAC's "fLaC" + STREAMINFO), so
        # the first chunk carries them and even a clip with no audio is a valid, empty stream.
        self._container.start_encoding()
        self._aligner = SampleAligner(PCM_SAMPLE_WIDTH)
        self._pts = 0
        self._finished = False

    def encode(self, pcm16: bytes) -> bytes:
        """Feed PCM16 (any byte length); return the pages/frames completed so far (possibly none)."""
        if self._finished:
            raise RuntimeError("AvStreamEncoder.encode() after flush()")
        whole = self._aligner.take(pcm16)
        if whole:
            samples = np.frombuffer(whole, dtype="<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = self.sample_rate
            frame.pts = self._pts
            self._pts += samples.shape[1]
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def flush(self) -> bytes:
        """End the stream: drain the encoder and write the container's trailer."""
        if self._finished:
            return b""
        self._finished = True
        self._aligner.reset()
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()


def warm_up() -> None:
    """Load FFmpeg and initialise each encoder once, off the event loop, before the first request.

    Measured here: importing PyAV takes ~300 ms and each codec's first encoder 30-200 ms more (later
    ones ~0.5-2.6 ms). Paid inside the first opus/aac/flac request, that would stall every stream on
    the worker's event loop; a worker calls this in a thread at start instead.
    """
    codecs: tuple[tuple[AvCodec, int], ...] = (("opus", 48000), ("aac", 24000), ("flac", 24000))
    for codec, rate in codecs:
        encoder = AvStreamEncoder(codec, rate, 64 if codec != "flac" else None)
        encoder.encode(bytes(2 * rate // 50))  # 20 ms of silence
        encoder.flush()
