"""MPEG audio Layer III frame headers: enough to cut an MP3 stream only between whole frames."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

HEADER_LEN = 4

# Indexed by the header's 2-bit version field: 0 = MPEG-2.5, 1 = reserved, 2 = MPEG-2, 3 = MPEG-1.
_SAMPLE_RATES: dict[int, tuple[int, int, int]] = {
    3: (44100, 48000, 32000),
    2: (22050, 24000, 16000),
    0: (11025, 12000, 8000),
}
_BITRATES_V1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_BITRATES_V2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_LAYER_III = 1


@dataclass(frozen=True)
class Mp3FrameHeader:
    """The fields of one Layer III frame header that size and time the frame."""

    mpeg_version: float  # 1, 2 or 2.5
    sample_rate: int
    bitrate_kbps: int
    padding: bool
    channels: int

    @property
    def samples_per_frame(self) -> int:
        """PCM samples per channel that one frame decodes to."""
        return 1152 if self.mpeg_version == 1 else 576

    @property
    def frame_length(self) -> int:
        """Bytes in the frame, header included."""
        coefficient = 144 if self.mpeg_version == 1 else 72
        return coefficient * self.bitrate_kbps * 1000 // self.sample_rate + int(self.padding)


def parse_frame_header(data: bytes | bytearray, offset: int = 0) -> Mp3FrameHeader | None:
    """Parse the Layer III frame header at ``offset``; None if there is none (or it is incomplete)."""
    if len(data) - offset < HEADER_LEN:
        return None
    b1, b2, b3 = data[offset + 1], data[offset + 2], data[offset + 3]
    if data[offset] != 0xFF or b1 & 0xE0 != 0xE0:
        return None
    version, layer = (b1 >> 3) & 0x3, (b1 >> 1) & 0x3
    bitrate_index, rate_index = b2 >> 4, (b2 >> 2) & 0x3
    # Free-format (index 0) frames have no computable length; LAME never writes them at a fixed bitrate.
    if version not in _SAMPLE_RATES or layer != _LAYER_III or bitrate_index in (0, 15) or rate_index == 3:
        return None
    bitrates = _BITRATES_V1 if version == 3 else _BITRATES_V2
    return Mp3FrameHeader(
        mpeg_version={3: 1.0, 2: 2.0, 0: 2.5}[version],
        sample_rate=_SAMPLE_RATES[version][rate_index],
        bitrate_kbps=bitrates[bitrate_index],
        padding=bool((b2 >> 1) & 0x1),
        channels=1 if (b3 >> 6) == 0x3 else 2,
    )


def iter_frames(data: bytes | bytearray) -> Iterator[tuple[int, Mp3FrameHeader]]:
    """Yield (offset, header) of each complete frame from the start; stop at the first incomplete or invalid one."""
    offset = 0
    while (header := parse_frame_header(data, offset)) is not None:
        end = offset + header.frame_length
        if end > len(data):
            return
        yield offset, header
        offset = end


def whole_frames_length(data: bytes | bytearray) -> int:
    """Length of the longest prefix of ``data`` made only of complete frames."""
    end = 0
    for offset, header in iter_frames(data):
        end = offset + header.frame_length
    return end
