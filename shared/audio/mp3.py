"""Streaming MP3 encoding with lameenc, emitted in whole frames so the stream stays valid when cut (§4.7)."""

from __future__ import annotations

import lameenc

from shared.audio.align import SampleAligner
from shared.audio.formats import PCM_SAMPLE_WIDTH
from shared.audio.mp3frames import HEADER_LEN, parse_frame_header, whole_frames_length

# LAME's 7 is its fastest algorithm; at the bitrates we offer it is indistinguishable for speech and
# costs about a quarter of quality 2's CPU per stream.
DEFAULT_QUALITY = 7


class Mp3StreamEncoder:
    """Encode a PCM16 mono stream to constant-bitrate MP3, returning only whole MPEG frames."""

    def __init__(self, sample_rate: int, bitrate_kbps: int, quality: int = DEFAULT_QUALITY) -> None:
        """Encode ``sample_rate`` Hz mono PCM16 at ``bitrate_kbps``; the MP3 keeps the input rate."""
        self.sample_rate = sample_rate
        self.bitrate_kbps = bitrate_kbps
        self._lame = lameenc.Encoder()
        self._lame.set_channels(1)
        self._lame.set_in_sample_rate(sample_rate)
        # Without this LAME picks its own output rate for low bitrates (44.1 kHz at 32 kbps comes out
        # resampled), and the stream would no longer be the format the client asked for.
        self._lame.set_out_sample_rate(sample_rate)
        self._lame.set_bit_rate(bitrate_kbps)
        self._lame.set_quality(quality)
        self._aligner = SampleAligner(PCM_SAMPLE_WIDTH)
        # LAME's output chunks end mid-frame; the tail waits here until its frame is complete.
        self._pending = bytearray()
        self._started = False  # lameenc refuses flush() before its first encode()
        self._finished = False

    def encode(self, pcm16: bytes) -> bytes:
        """Feed PCM16 (any byte length); return the frames completed so far (possibly none)."""
        if self._finished:
            raise RuntimeError("Mp3StreamEncoder.encode() after flush()")
        whole = self._aligner.take(pcm16)
        if whole:
            self._pending += self._lame.encode(whole)
            self._started = True
        return self._take_whole_frames()

    def flush(self) -> bytes:
        """End the stream: return every remaining frame, including LAME's padded last one."""
        if self._finished:
            return b""
        self._finished = True
        self._aligner.reset()
        if self._started:
            self._pending += self._lame.flush()
        out = bytes(self._pending)
        self._pending.clear()
        return out

    def _take_whole_frames(self) -> bytes:
        if len(self._pending) < HEADER_LEN:
            return b""
        if parse_frame_header(self._pending) is None:
            # Not at a frame header: alignment cannot be restored, so pass bytes on rather than drop audio.
            out = bytes(self._pending)
            self._pending.clear()
            return out
        cut = whole_frames_length(self._pending)
        out = bytes(self._pending[:cut])
        del self._pending[:cut]
        return out
