"""Binary audio frames of the native protocol: a small header a browser can parse with a DataView.

Layout (all integers big-endian)::

    0   u8   version (1)
    1   u8   L = length of the context id in bytes (1..64, ASCII)
    2   u32  sequence number of this chunk within its context (0, 1, 2, ...)
    6   L    context id
    6+L      one zero byte of padding when 6+L is odd, so 16-bit PCM starts 2-byte aligned
             (``new Int16Array(buf, offset)`` needs an even offset)
    ...      audio bytes in the context's output format

The header length is therefore ``6 + L + ((6 + L) & 1)``.
"""

from __future__ import annotations

import struct

FRAME_VERSION = 1
_HEAD = struct.Struct(">BBI")


def header_length(context_id_len: int) -> int:
    """Bytes before the audio."""
    n = 6 + context_id_len
    return n + (n & 1)


def encode_audio_frame(context_id: bytes, seq: int, audio: bytes) -> bytes:
    """One binary frame; ``context_id`` is pre-encoded ASCII."""
    n = 6 + len(context_id)
    pad = b"\x00" if n & 1 else b""
    return b"".join((_HEAD.pack(FRAME_VERSION, len(context_id), seq), context_id, pad, audio))


def decode_audio_frame(frame: bytes) -> tuple[str, int, bytes]:
    """(context_id, seq, audio) of a frame; for clients and tests."""
    version, length, seq = _HEAD.unpack_from(frame, 0)
    if version != FRAME_VERSION:
        raise ValueError(f"unknown audio frame version {version}")
    cid = frame[6:6 + length].decode("ascii")
    return cid, seq, frame[header_length(length):]
