"""Where each chunk of an encoded stream starts in playing time, read from the stream itself.

Alignment from the workers is relative to each chunk; making it absolute needs the playing time of
everything sent before the chunk. Byte counts give that exactly only for PCM, G.711, WAV and CBR MP3;
Opus, AAC and FLAC are variable-rate, so their own framing is read instead: the Ogg granule position
(Opus), the ADTS frame count (AAC), and the FLAC frame number. Chunks from ``OutputEncoder`` always
end on a page/frame boundary, which is what lets a chunk be parsed on its own. The result is exact
to the codec's framing: the encoded stream lags the PCM by what the encoder still holds (at most
one Opus page of 20 ms, one AAC frame of 1024 samples, one FLAC block of 1152 samples).
"""

from __future__ import annotations

import struct

from shared.audio.formats import AudioFormat
from shared.audio.mp3frames import iter_frames
from shared.audio.wav import HEADER_SIZE

_OPUS_RATE = 48000  # Ogg Opus granule positions always count 48 kHz samples (RFC 7845)
_OGG_HEADER = 27
_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


class PlayClock:
    """Feed every chunk of one stream in order; ``advance()`` says where each one starts (seconds)."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.fmt = fmt
        self.seconds = 0.0  # playing time of the chunks fed so far (start of the next one)
        self._header_left = HEADER_SIZE if fmt.codec == "wav" else 0
        self._samples = 0  # AAC, MP3: samples counted so far
        self._preskip = 0  # Opus: samples the decoder drops at the start (OpusHead)
        self._flac_block = 0  # FLAC: the stream's fixed block size, from its first frame

    def advance(self, chunk: bytes) -> float:
        """Account for ``chunk``; return where it starts, in seconds from the start of the stream."""
        start = self.seconds
        codec = self.fmt.codec
        if codec == "opus":
            self._ogg(chunk)
        elif codec == "aac":
            self._adts(chunk)
        elif codec == "flac":
            start = self._flac(chunk, start)
        elif codec == "mp3":
            frames = [h for _, h in iter_frames(chunk)]
            if frames:
                self._samples += sum(h.samples_per_frame for h in frames)
                self.seconds = self._samples / frames[0].sample_rate
            else:
                self.seconds += len(chunk) / self.fmt.bytes_per_second
        else:
            payload = len(chunk)
            if self._header_left:
                skipped = min(self._header_left, payload)
                self._header_left -= skipped
                payload -= skipped
            self.seconds += payload / self.fmt.bytes_per_second
        return start

    def _ogg(self, data: bytes) -> None:
        pos = 0
        while pos + _OGG_HEADER <= len(data) and data[pos:pos + 4] == b"OggS":
            granule = struct.unpack_from("<q", data, pos + 6)[0]
            segments = data[pos + 26]
            body = pos + _OGG_HEADER + segments
            if body > len(data):
                return
            if data[body:body + 8] == b"OpusHead" and body + 12 <= len(data):
                self._preskip = struct.unpack_from("<H", data, body + 10)[0]
            elif granule > 0:  # -1: no packet ends on this page; 0: the header pages
                self.seconds = max(0, granule - self._preskip) / _OPUS_RATE
            pos = body + sum(data[pos + _OGG_HEADER:body])

    def _adts(self, data: bytes) -> None:
        pos, rate = 0, self.fmt.sample_rate
        while pos + 7 <= len(data) and data[pos] == 0xFF and data[pos + 1] & 0xF0 == 0xF0:
            index = (data[pos + 2] >> 2) & 0x0F
            rate = _ADTS_RATES[index] if index < len(_ADTS_RATES) else rate
            length = ((data[pos + 3] & 0x03) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
            if length < 7:
                break
            self._samples += 1024 * ((data[pos + 6] & 0x03) + 1)
            pos += length
        self.seconds = self._samples / rate

    def _flac(self, data: bytes, start: float) -> float:
        pos = 0
        if data[:4] == b"fLaC":  # the stream header: skip its metadata blocks to the first frame
            pos = 4
            while pos + 4 <= len(data):
                last, size = data[pos] & 0x80, int.from_bytes(data[pos + 1:pos + 4], "big")
                pos += 4 + size
                if last:
                    break
        # Fixed-blocksize frames are numbered: the chunk's first frame number x block size is where
        # the chunk starts; the next chunk's first frame says where this one ended.
        if pos + 5 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xFE != 0xF8:
            return start
        code = data[pos + 2] >> 4
        number = _utf8_number(data, pos + 4)
        if not self._flac_block:
            self._flac_block = _flac_block_size(code)
        if number is not None and self._flac_block:
            # Only where this chunk starts is known (FLAC frames do not say their length), so
            # ``seconds`` is the start of the latest chunk rather than its end.
            start = self.seconds = number * self._flac_block / self.fmt.sample_rate
        return start


def _flac_block_size(code: int) -> int:
    if code == 1:
        return 192
    if 2 <= code <= 5:
        return 576 << (code - 2)
    if code >= 8:
        return 256 << (code - 8)
    return 0  # 0 reserved; 6/7: stored after the header (only a short last frame uses them)


def _utf8_number(data: bytes, pos: int) -> int | None:
    """FLAC's frame number: UTF-8-style variable-length coding of up to 36 bits."""
    if pos >= len(data):
        return None
    first = data[pos]
    if first < 0x80:
        return first
    extra = 0
    mask = 0x40
    while first & mask and extra < 6:
        extra += 1
        mask >>= 1
    value = first & (mask - 1)
    if pos + extra >= len(data):
        return None
    for b in data[pos + 1:pos + 1 + extra]:
        value = (value << 6) | (b & 0x3F)
    return value
