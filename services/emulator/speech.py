"""One generation: text -> encoded audio chunks cut at character boundaries, with their timing."""

from __future__ import annotations

import itertools
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from emulator.formats import new_encoder
from emulator.framebank import cacheable, encode_piece
from emulator.synth import samples_per_char, synthesize
from shared.audio import AudioFormat


@dataclass(frozen=True)
class AudioChunk:
    """Encoded audio for ``text``, which starts ``start_sample`` samples into its generation."""

    audio: bytes
    text: str
    start_sample: int
    samples_per_char: int
    sample_rate: int
    audio_b64: bytes | None = None  # precomputed base64 of ``audio`` (the frame bank's chunks carry it)

    def base64(self) -> bytes:
        """``audio`` in base64 (ASCII bytes), as WebSocket frames carry it."""
        return self.audio_b64 if self.audio_b64 is not None else b64encode(self.audio)

    @property
    def num_samples(self) -> int:
        """PCM samples this chunk's characters occupy."""
        return len(self.text) * self.samples_per_char

    @property
    def duration_s(self) -> float:
        """Playing time of the chunk's characters."""
        return self.num_samples / self.sample_rate

    def ws_alignment(self) -> dict[str, Any]:
        """WebSocket alignment (``chars``/``charStartTimesMs``/``charDurationsMs``), relative to this chunk."""
        return ws_alignment(self.text, self.samples_per_char, self.sample_rate)

    def http_alignment(self, offset_s: float = 0.0) -> dict[str, Any]:
        """HTTP alignment in absolute seconds, this chunk starting ``offset_s`` into the response."""
        step = self.samples_per_char / self.sample_rate
        starts = [round(offset_s + i * step, 3) for i in range(len(self.text))]
        return {
            "characters": list(self.text),
            "character_start_times_seconds": starts,
            "character_end_times_seconds": [
                round(offset_s + (i + 1) * step, 3) for i in range(len(self.text))
            ],
        }


def ws_alignment(text: str, spc: int, sample_rate: int) -> dict[str, Any]:
    """Alignment for ``text`` voiced from the start of a chunk; the durations sum to its length in ms."""
    # Rounding the boundaries (not each duration) keeps the sum equal to the rounded chunk length.
    edges = [round(i * spc * 1000 / sample_rate) for i in range(len(text) + 1)]
    return {
        "chars": list(text),
        "charStartTimesMs": edges[:-1],
        "charDurationsMs": [b - a for a, b in itertools.pairwise(edges)],
    }


def iter_chunks(text: str, fmt: AudioFormat, ms_per_char: float, chunk_ms: float) -> Iterator[AudioChunk]:
    """Synthesize ``text`` lazily, one chunk of about ``chunk_ms`` at a time, in ``fmt``."""
    spc = samples_per_char(fmt.sample_rate, ms_per_char)
    chars_per_chunk = max(1, int(chunk_ms * fmt.sample_rate / 1000 // spc))
    if cacheable(fmt, spc):
        for start in range(0, len(text), chars_per_chunk):
            piece = text[start : start + chars_per_chunk]
            audio, b64 = encode_piece(piece, fmt, spc)
            yield AudioChunk(audio, piece, start * spc, spc, fmt.sample_rate, b64)
        return
    encoder = new_encoder(fmt)
    # MP3 returns whole frames only, so a short piece may encode to nothing yet: its characters ride
    # along with the next chunk that carries bytes.
    pending_text, pending_start = "", 0
    for start in range(0, len(text), chars_per_chunk):
        piece = text[start : start + chars_per_chunk]
        last = start + chars_per_chunk >= len(text)
        audio = encoder.feed(synthesize(piece, fmt.sample_rate, ms_per_char))
        if last:
            audio += encoder.finish()
        if not pending_text:
            pending_start = start * spc
        pending_text += piece
        if audio or last:
            yield AudioChunk(audio, pending_text, pending_start, spc, fmt.sample_rate)
            pending_text = ""
