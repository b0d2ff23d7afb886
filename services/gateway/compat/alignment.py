"""Alignment for the HTTP timestamp endpoints: absolute seconds, continuous, and an opt-in word view.

Workers send ElevenLabs' chunk alignment (``chars``, ``charStartTimesMs``, ``charDurationsMs``,
relative to the chunk). Here it becomes ElevenLabs' HTTP form (seconds from the start of the
stream, so times never reset between chunks) and, with ``?words=true``, a word list
``[{"word", "start_ms", "end_ms"}]`` a client can highlight words with or cut the audio at.
A word is a maximal run of non-whitespace characters; it is complete when whitespace follows it or
the stream ends, so the streaming endpoint reports each word in the line where it completes.
"""

from __future__ import annotations

import json
from typing import Any


def absolute_pair(alignment: dict[str, Any] | None, offset_s: float) -> tuple[dict[str, Any] | None,
                                                                            dict[str, Any] | None]:
    """(alignment, normalized_alignment) in HTTP form; the second is the provider's normalized-text
    timing where it sent one that differs (numbers spelled out...), else the same object."""
    al = absolute_alignment(alignment, offset_s)
    normalized = alignment.get("normalized") if alignment else None
    return al, (absolute_alignment(normalized, offset_s) if normalized else al)


def absolute_alignment(alignment: dict[str, Any] | None, offset_s: float) -> dict[str, Any] | None:
    """ElevenLabs' chunk alignment (ms, relative) as its HTTP form (seconds from the stream start)."""
    if not alignment or not alignment.get("chars"):
        return None
    starts = alignment.get("charStartTimesMs") or []
    durations = alignment.get("charDurationsMs") or []
    begin = [round(offset_s + s / 1000, 3) for s in starts]
    end = [round(offset_s + (s + d) / 1000, 3) for s, d in zip(starts, durations)]
    return {"characters": list(alignment["chars"]), "character_start_times_seconds": begin,
            "character_end_times_seconds": end}


class WordCutter:
    """Characters with absolute times in, completed words out."""

    def __init__(self) -> None:
        self._word: list[str] = []
        self._start = 0.0
        self._end = 0.0

    def feed(self, al: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Words completed by this chunk's characters (HTTP-form alignment, seconds)."""
        out: list[dict[str, Any]] = []
        if not al:
            return out
        for ch, start, end in zip(al["characters"], al["character_start_times_seconds"],
                                  al["character_end_times_seconds"]):
            if ch.isspace():
                out += self.end()
                continue
            if not self._word:
                self._start = start
            self._word.append(ch)
            self._end = max(self._end, end)
        return out

    def end(self) -> list[dict[str, Any]]:
        """The word still open, if any (call once more at the end of the stream)."""
        if not self._word:
            return []
        word = {"word": "".join(self._word), "start_ms": round(self._start * 1000),
                "end_ms": round(self._end * 1000)}
        self._word, self._end = [], 0.0
        return [word]


class AlignmentJson:
    """A whole clip's alignments kept as serialized JSON fragments: ~40 bytes a character, not ~200."""

    def __init__(self, words: bool = False) -> None:
        self._original = _Arrays()
        self._normalized = _Arrays()
        self._words = bytearray() if words else None
        self._cutter = WordCutter()

    def add(self, al: dict[str, Any] | None, normalized: dict[str, Any] | None = None) -> None:
        """Append one chunk's HTTP-form alignment (and its normalized-text one, if different)."""
        self._original.add(al)
        self._normalized.add(normalized or al)
        if self._words is not None:
            _append(self._words, self._cutter.feed(al))

    def render(self) -> bytes:
        """``,"alignment":…,"normalized_alignment":…[,"words":[…]]}`` — the end of the response object."""
        out = b',"alignment":' + self._original.render() + b',"normalized_alignment":' + self._normalized.render()
        if self._words is not None:
            _append(self._words, self._cutter.end())
            out += b',"words":[' + self._words + b"]"
        return out + b"}"


class _Arrays:
    """The three alignment arrays of one text, as JSON fragments."""

    def __init__(self) -> None:
        self.chars = bytearray()
        self.starts = bytearray()
        self.ends = bytearray()

    def add(self, al: dict[str, Any] | None) -> None:
        if al:
            _append(self.chars, al["characters"])
            _append(self.starts, al["character_start_times_seconds"])
            _append(self.ends, al["character_end_times_seconds"])

    def render(self) -> bytes:
        if not self.chars:
            return b"null"
        return (b'{"characters":[' + self.chars + b'],"character_start_times_seconds":[' + self.starts
                + b'],"character_end_times_seconds":[' + self.ends + b"]}")


def _append(buf: bytearray, items: list[Any]) -> None:
    for item in items:
        if buf:
            buf += b","
        buf += json.dumps(item, separators=(",", ":")).encode()
