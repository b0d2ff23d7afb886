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


# ~100 distinct characters x one or two formats in practice; the bound keeps a pathological mix of
# rates and codecs under ~20 MB (8 KB of PCM + 11 KB of base64 per entry at most).
@lru_cache(maxsize=1024)
def encoded_segment(code: int, codec: str, sample_rate: int, n: int) -> tuple[bytes, bytes | None]:
    """One character's encoded audio and its base64 as ASCII bytes (None when not whole quanta)."""
    pcm = char_segment(code, sample_rate, n)
    audio = ulaw_encode(pcm) if codec == "ulaw" else alaw_encode(pcm) if codec == "alaw" else pcm
    b64 = base64.b64encode(audio) if len(audio) % 3 == 0 else None
    return audio, b64


def encode_piece(text: str, fmt: AudioFormat, n: int) -> tuple[bytes, bytes]:
    """``text`` voiced and encoded in ``fmt`` (see :func:`cacheable`), with its base64 as ASCII bytes.

    Bytes, not str: the frame is written as bytes, so the base64 is never encoded again per chunk.
    """
    segments = [encoded_segment(char_code(c), fmt.codec, fmt.sample_rate, n) for c in text]
    audio = b"".join([a for a, _ in segments])
    pieces = [b for _, b in segments]
    if all(p is not None for p in pieces):
        return audio, b"".join(pieces)  # type: ignore[arg-type]
    return audio, base64.b64encode(audio)
