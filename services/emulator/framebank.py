"""Per-character encoded audio and its base64, cached, so a streamed chunk costs joins, not synthesis.

A character's segment depends only on its code, the rate and the segment length (:mod:`emulator.synth`),
and PCM, μ-law and A-law encode sample by sample, so a chunk's audio is the join of its characters'
encoded segments and, when a segment is a whole number of base64 quanta (3 bytes; true for 60 ms per
character at every supported rate), its base64 is the join of theirs too. The bytes are exactly what
synthesizing and encoding the chunk whole gives; MP3 (stateful) and long segments take that path.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from emulator.synth import MAX_CACHED_SEGMENT_SAMPLES, char_code, char_segment
from shared.audio import AudioFormat, alaw_encode, ulaw_encode

SAMPLEWISE_CODECS: frozenset[str] = frozenset({"pcm", "ulaw", "alaw"})


def cacheable(fmt: AudioFormat, samples_per_char: int) -> bool:
    """True when chunks in ``fmt`` can be assembled from cached per-character segments."""
    return fmt.codec in SAMPLEWISE_CODECS and samples_per_char <= MAX_CACHED_SEGMENT_SAMPLES


class _Segments(dict[int, bytes]):
    """Character code -> its encoded segment (or its base64), synthesized on first use; at most 256 keys."""

    def __init__(self, codec: str, sample_rate: int, n: int, b64: bool) -> None:
        super().__init__()
        self._key = (codec, sample_rate, n)
        self._b64 = b64

    def __missing__(self, code: int) -> bytes:
        codec, sample_rate, n = self._key
        pcm = char_segment(code, sample_rate, n)
        audio = ulaw_encode(pcm) if codec == "ulaw" else alaw_encode(pcm) if codec == "alaw" else pcm
        value = base64.b64encode(audio) if self._b64 else audio
        self[code] = value
        return value


class _Bank:
    """One format's per-character segments and their base64 (when a segment is whole base64 quanta)."""

    def __init__(self, codec: str, sample_rate: int, n: int) -> None:
        self.audio = _Segments(codec, sample_rate, n, b64=False)
        width = 2 if codec == "pcm" else 1
        self.b64 = _Segments(codec, sample_rate, n, b64=True) if n * width % 3 == 0 else None


# One or two formats in practice; each bank holds at most 256 segments of <= 8 KB and their base64,
# so the bound keeps a pathological mix of rates and codecs under ~40 MB.
@lru_cache(maxsize=8)
def _bank(codec: str, sample_rate: int, n: int) -> _Bank:
    return _Bank(codec, sample_rate, n)


def _codes(text: str) -> bytes:
    """The code voiced for each character (Latin-1, else the replacement code; see synth.char_code)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return bytes(char_code(c) for c in text)


def encode_piece(text: str, fmt: AudioFormat, n: int) -> tuple[bytes, bytes]:
    """``text`` voiced and encoded in ``fmt`` (see :func:`cacheable`), with its base64 as ASCII bytes.

    Bytes, not str: the frame is written as bytes, so the base64 is never encoded again per chunk.
    The lookups are C-level (``bytes`` iterates codes, ``dict.__getitem__`` over them): a chunk
    costs two joins.
    """
    bank = _bank(fmt.codec, fmt.sample_rate, n)
    codes = _codes(text)
    audio = b"".join(map(bank.audio.__getitem__, codes))
    if bank.b64 is not None:
        return audio, b"".join(map(bank.b64.__getitem__, codes))
    return audio, base64.b64encode(audio)
