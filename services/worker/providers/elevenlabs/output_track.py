"""A context's audio as the consumer gets it: upstream audio converted to the requested format, its
alignment moved onto the output's own timeline.

A converter's output lags its input by what it still holds (an AAC frame, an MP3 frame...): upstream
alignment is first put on the timeline of all upstream audio fed so far, held while the converter
gives nothing back, and, once an output chunk comes out, made relative to where that chunk starts.
Native formats pass through (the alignment untouched).
"""

from __future__ import annotations

from typing import Any

from shared.audio.clock import PlayClock
from shared.audio.formats import AudioFormat
from worker.providers.base import AudioChunk

from .options import AudioOut


class OutputTrack:
    """Upstream audio in, consumer chunks out, for one context on one run of upstream audio."""

    def __init__(self, output: AudioFormat, upstream_format: str) -> None:
        """Convert audio arriving as ``upstream_format`` into ``output``."""
        self._out = AudioOut(output, upstream_format)
        self._pending_alignment: dict[str, Any] | None = None  # converting: times on the upstream PCM timeline
        self._fed_ms = 0.0  # converting: upstream audio fed to the converter so far
        self._clock = PlayClock(output) if self._out.converting else None  # converting: output played so far

    def feed(self, audio: bytes, alignment: dict[str, Any] | None) -> AudioChunk | None:
        """The chunk for the consumer from one upstream chunk, or None while the converter fills."""
        if self._clock is not None and alignment is not None:
            alignment = _shift(alignment, self._fed_ms)
        self._fed_ms += self._out.upstream_ms(audio)
        out = self._out.feed(audio)
        alignment = _joined(self._pending_alignment, alignment)
        if out:
            return self._chunk(out, alignment)
        self._pending_alignment = alignment
        return None

    def finish(self) -> AudioChunk | None:
        """The converter's tail (and any alignment still held) at the end of the stream, if any."""
        tail = self._out.finish()
        if tail or self._pending_alignment:
            return self._chunk(tail, self._pending_alignment)
        return None

    def _chunk(self, audio: bytes, alignment: dict[str, Any] | None) -> AudioChunk:
        self._pending_alignment = None
        if self._clock is not None:
            # Alignment on the input's timeline becomes relative to where this output chunk starts.
            start_ms = self._clock.advance(audio) * 1000
            if alignment is not None:
                alignment = _shift(alignment, -start_ms)
        return AudioChunk(audio, alignment)


def _shift(alignment: dict[str, Any], ms: float) -> dict[str, Any]:
    """``alignment`` (and its normalized view, if any) with its start times moved by ``ms``."""
    out = {**alignment, "charStartTimesMs": [_num(t + ms) for t in alignment["charStartTimesMs"]]}
    if isinstance(alignment.get("normalized"), dict):
        out["normalized"] = _shift(alignment["normalized"], ms)
    return out


def _joined(held: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any] | None:
    """Two alignments on one timeline as one (the converter held the first one's audio back)."""
    if held is None or new is None:
        return held or new
    return {"chars": held["chars"] + new["chars"],
            "charStartTimesMs": held["charStartTimesMs"] + new["charStartTimesMs"],
            "charDurationsMs": held["charDurationsMs"] + new["charDurationsMs"]}


def _num(v: float) -> float:
    """Whole milliseconds stay integers (what the upstream sends); the rest to a microsecond."""
    return int(v) if float(v).is_integer() else round(v, 3)
