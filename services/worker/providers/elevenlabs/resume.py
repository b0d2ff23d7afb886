"""Where a context's listener stopped hearing it, so another socket can continue from there (failover).

A context that loses its socket after audio went out cannot be replayed from the start (the listener
would hear it twice), but it can be *resumed*: the upstream's alignment says which characters each
audio chunk voices, so the text after the last character the listener got is what is left to say.

To make the resume point a word boundary, upstream audio is released to the listener only up to the
end of the last whitespace character it voices; the partial word after it waits (at most
:data:`HOLD_MS`, after which it goes out at a character boundary) for the chunk that completes it,
or for the final. Two exceptions release every whole character: the context's first audio (holding
its word would add to the time to first audio; a failure inside that first word resumes at the next
character) and audio that completes the flushed text (nothing later can complete its last word). On a failover the held audio is dropped (never heard) and the text from the first
word not fully released is sent to the new socket; the whitespace before it marks the cut.

A hold is only taken while the listener can afford it (:mod:`.headroom`): an upstream at real-time pace
leaves the listener no more than the chunk it just got, and holding part of it would make the player
run dry before the next one. Then whole characters go out, or, if even the partial character is more
than the listener can spare, everything: that character counts as heard (a resume starts after it,
clipping it at most) because a seam on a rare failover costs less than a gap in every context.

Alignment reaches the listener in the upstream's own shape: per chunk (``sync_alignment``) it is
re-cut with the audio, so every released chunk carries its characters; a whole generation's timing
(the upstream's default: on its first chunk, null after) goes out as it came with the first audio
released after it, and after a failover the new socket's timing for characters already announced
that way is dropped, so the listener is told of every character once.

Resuming is possible only while every released chunk carried an alignment that matches the text we
sent (whitespace aside, a few characters of slack for normalisation), the upstream audio can be cut
by sample (PCM, μ-law, A-law: not MP3), and the unspoken text fits ``FAILOVER_TEXT_BYTES``. Otherwise
the context falls back to what it did before failover existed: finish on its socket or fail.
"""

from __future__ import annotations

import time
from typing import Any

from . import messages
from .headroom import Headroom
from .timeline import Timeline, whole_ms

HOLD_MS = 1500.0  # longest partial word held back: a run without spaces goes out at char boundaries
_LOOKAHEAD = 4  # alignment characters may skip this many text characters (normalised punctuation)
UNEXPLAINED_MS = 250.0  # audio past the last aligned character beyond this: not trackable (no alignment)
_SLACK_MS = 2.0  # alignment is in whole milliseconds: a character ending this close to the audio's end is in
_BYTES_PER_SAMPLE = {"pcm": 2, "ulaw": 1, "alaw": 1}


def _split_format(upstream_format: str) -> tuple[int, int] | None:
    """(bytes per sample, sample rate) of a format that can be cut by sample, else None (MP3)."""
    codec, _, rest = upstream_format.partition("_")
    width = _BYTES_PER_SAMPLE.get(codec)
    rate = rest.split("_")[0]
    if width is None or not rate.isdigit():
        return None
    return width, int(rate)


class ResumePoint:
    """Tracks a context's text against the audio released to its listener; builds the resume messages."""

    def __init__(self, context_id: str, upstream_format: str, max_text_bytes: int, max_failovers: int) -> None:
        """Resume ``context_id`` (upstream audio in ``upstream_format``) at most ``max_failovers`` times."""
        self.context_id = context_id
        self.max_failovers = max_failovers
        self._max_text_bytes = max_text_bytes
        cut = _split_format(upstream_format)
        self.usable = cut is not None and max_failovers > 0  # False: this context can no longer resume
        self._width, self._rate = cut or (2, 24000)
        self._text = ""  # text from ``_base`` on: what may still need saying
        self._text_bytes = 0
        self._base = 0  # characters of the context's text before ``_text`` (all released)
        self._pos = 0  # index in ``_text`` just after the last released character
        self._flushed_to = 0  # absolute offset of the last flush
        self._held = b""
        self._timeline = Timeline()  # the held characters' timing, from the held audio's start
        self._out_align: dict[str, Any] | None = None  # upstream alignment not yet sent, from the held audio's start
        self._released_any = False
        self._per_chunk: bool | None = None  # alignment per chunk (sync_alignment), decided at the first one
        self._ahead = 0  # held characters whose timing the listener already got (with earlier audio)
        self._announced = 0  # after a failover: leading characters of the new socket's timing to drop
        self.failovers: list[dict[str, Any]] = []  # {at_char, reason, cause} per resume, for the final
        self.rebilled_chars = 0  # characters a paid upstream received twice (sent again after a failover)
        self._last_rebilled = 0
        self._headroom = Headroom()  # whether the listener can afford a hold

    # -- text in --------------------------------------------------------------------------------------
    def add_text(self, text: str, flush: bool) -> None:
        """The context was given ``text`` (``flush``: generate everything so far now)."""
        if not self.usable:
            return
        if text:
            self._text += text
            self._text_bytes += len(text.encode())
            if self._text_bytes > self._max_text_bytes:
                self._give_up()  # bounded: a context this far ahead of its audio fails as before
                return
        if flush:
            self._flushed_to = self._base + len(self._text)

    # -- audio out ------------------------------------------------------------------------------------
    def take(self, audio: bytes, alignment: dict[str, Any] | None,
             now: float | None = None) -> tuple[bytes, dict[str, Any] | None]:
        """Upstream ``audio`` in; what may reach the listener now out (the rest is held).

        An alignment starts at its chunk's start but may run past it: without ``sync_alignment`` the
        upstream times a whole generation on its first chunk and sends none after (the characters
        then wait here until their audio arrives). Alignments go out as they came, with the first
        audio released after them (times shifted by the held audio that precedes their chunk)."""
        if not self.usable:
            return audio, alignment
        now = time.monotonic() if now is None else now
        self._headroom.arrived(now)
        if len(audio) % self._width:
            return self._give_up_with(audio, alignment)
        timeline = self._timeline
        held_ms = self._ms(len(self._held))
        if alignment is None and held_ms >= timeline.last_end() - _SLACK_MS:
            return self._give_up_with(audio, None)  # audio past every timed character: untrackable
        if alignment is not None:
            chars, starts, durs = alignment["chars"], alignment["charStartTimesMs"], alignment["charDurationsMs"]
            if not len(chars) == len(starts) == len(durs):
                return self._give_up_with(audio, alignment)
            if self._per_chunk is None and chars:
                # ``sync_alignment``: timing per chunk (re-cut with the audio below); otherwise a whole
                # generation's timing on its first chunk (passed on as it came, so it stays on one chunk).
                self._per_chunk = max(s + d for s, d in zip(starts, durs)) <= self._ms(len(audio)) + _SLACK_MS
            timeline.extend(chars, starts, durs, held_ms)
            if not self._per_chunk:
                fresh = _strip(alignment, self._announced) if self._announced else alignment
                self._announced -= len(alignment["chars"]) - len(fresh["chars"])
                if fresh["chars"]:
                    self._out_align = _merge(self._out_align, fresh, held_ms)
        self._held += audio
        held_ms = self._ms(len(self._held))
        if held_ms > timeline.last_end() + UNEXPLAINED_MS:
            return self._give_up_with(b"", None)  # audio no alignment explains: what it voices is unknown
        heard, cut = timeline.hear(held_ms + _SLACK_MS)  # characters whose audio is all here; to the last space
        if cut < heard and (not self._released_any or self._reaches_flush(timeline.chars(heard))):
            # The first audio goes out at once (holding its word would add to time-to-first-audio);
            # a flushed text all heard has no later audio to complete its last word.
            cut = heard
        if cut == 0 and held_ms > HOLD_MS:
            cut = heard  # one long run without spaces: release whole characters
            if cut == 0:
                return self._give_up_with(b"", None)  # audio that no alignment explains
        # A hold the listener cannot afford is not taken (headroom.py): whole characters instead of the
        # word, then all of it (the character it ends in counts as heard: a resume starts after it).
        cut_ms = self._cut_ms(cut, held_ms)
        if cut < heard and not self._headroom.can_hold(cut_ms, now):
            cut = heard
            cut_ms = self._cut_ms(cut, held_ms)
        byte = round(cut_ms * self._rate / 1000) * self._width
        if cut == len(timeline) and held_ms - cut_ms < _SLACK_MS:
            byte = len(self._held)  # alignment rounding must not leave a sliver held
        elif held_ms - cut_ms >= _SLACK_MS and not self._headroom.can_hold(cut_ms, now):
            byte = len(self._held)
            cut = timeline.started(held_ms)
        byte = min(byte, len(self._held))
        if byte == 0:
            return b"", None
        out, self._held = self._held[:byte], self._held[byte:]
        self._headroom.released(self._ms(byte), now)
        out_align, self._out_align = self._out_align, None
        self._released_any = True
        if self._per_chunk:
            out_align = timeline.alignment(cut)
        if out_align is not None:
            self._ahead = len(timeline) - cut  # timed for the listener, audio still held
        else:
            self._ahead = max(0, self._ahead - cut)
        if not self._advance(timeline.chars(cut)):
            whole = timeline.alignment() if self._per_chunk else out_align
            held, self._held = self._held, b""
            timeline.clear()
            return out + held, whole
        timeline.release(cut, self._ms(byte))
        return out, out_align

    def release(self) -> tuple[bytes, dict[str, Any] | None]:
        """The final arrived: everything held goes out."""
        audio, out_align, timeline = self._held, self._out_align, self._timeline
        if len(timeline):
            if self._per_chunk:
                out_align = timeline.alignment()
            self._advance(timeline.chars())
        self._held, self._out_align = b"", None
        timeline.clear()
        return audio, out_align

    def _cut_ms(self, cut: int, held_ms: float) -> float:
        """Held audio up to the end of the first ``cut`` characters."""
        return min(held_ms, self._timeline.end(cut - 1)) if cut else 0.0

    def _reaches_flush(self, chars: list[str]) -> bool:
        if self._flushed_to <= self._base + self._pos:
            return False  # no flush ahead of what was heard
        pos = self._match(chars)
        return pos is not None and self._base + pos >= self._flushed_to

    def _ms(self, nbytes: int) -> float:
        return nbytes / self._width * 1000 / self._rate

    # -- failover -------------------------------------------------------------------------------------
    @property
    def at_char(self) -> int:
        """Offset in the context's text where a resume starts (the first character not yet released)."""
        pos = self._pos
        while pos < len(self._text) and self._text[pos].isspace():
            pos += 1
        return self._base + pos

    def can_resume(self) -> bool:
        """True while a failover would be lossless and the context has failovers left."""
        return self.usable and len(self.failovers) < self.max_failovers

    def restart(self) -> None:
        """A move before any audio went out (the whole text is replayed): forget held audio."""
        self._held, self._out_align = b"", None
        self._timeline.clear()

    def resume(self, reason: str, cause: str) -> None:
        """Drop held audio and record the failover; the text from :attr:`at_char` on is sent again."""
        at = self.at_char
        # The held word's timing went out with earlier audio: the new socket's timing for it is dropped,
        # so the listener's alignment names every character once.
        lead = self._timeline.first_non_space()
        self._announced, self._ahead = max(0, self._ahead - lead), 0
        self._held, self._out_align = b"", None
        self._timeline.clear()
        rest_from = at - self._base
        remaining = self._text[rest_from:]
        self.failovers.append({"at_char": at, "reason": reason, "cause": cause})
        self.rebilled_chars += len(remaining)  # the old socket had this text too: billed there as well
        self._last_rebilled = len(remaining)
        self._text, self._base, self._pos = remaining, at, 0
        self._text_bytes = len(remaining.encode())

    def pending_text(self) -> tuple[str, bool]:
        """The text not yet heard, and whether a flush covers part of it."""
        return self._text[self._pos:], self._flushed_to > self._base + self._pos

    def mark_local(self, reason: str, cause: str, *, fresh: bool) -> None:
        """The local voice takes over from the resume point: a new failover entry if ``fresh``, else the
        last one (the move that found no socket), whose text then never reached a second socket."""
        if fresh or not self.failovers:
            self.resume(reason, cause)
        self.rebilled_chars -= self._last_rebilled  # the local voice bills nobody
        self._last_rebilled = 0
        self.failovers[-1]["to"] = "local"

    def pending_messages(self) -> list[str]:
        """The text not yet heard, as messages for a new socket (text given while it moved included)."""
        remaining = self._text[self._pos:]
        if not remaining:
            return []
        split = max(0, min(len(remaining), self._flushed_to - self._base - self._pos))
        out = []
        if split:
            out.append(messages.send_text(self.context_id, remaining[:split], flush=True))
        if split < len(remaining):
            out.append(messages.send_text(self.context_id, remaining[split:]))
        return out

    # -- internals ------------------------------------------------------------------------------------
    def _match(self, released: list[str]) -> int | None:
        """Where the text cursor lands after ``released`` characters (None: they do not match the text)."""
        text, pos = self._text, self._pos
        for char in released:
            if char.isspace():
                while pos < len(text) and text[pos].isspace():
                    pos += 1
                continue
            while pos < len(text) and text[pos].isspace():
                pos += 1
            found = text.find(char, pos, pos + 1 + _LOOKAHEAD)
            if found < 0:
                return None
            pos = found + 1
        return pos

    def _advance(self, released: list[str]) -> bool:
        """Move the text cursor over ``released`` characters; False (and unusable) if they do not match."""
        pos = self._match(released)
        if pos is None:
            self.usable = False
            return False
        self._pos = pos
        if pos > 4096:  # drop what was said: the text kept is only what may still need saying
            self._text = self._text[pos:]
            self._text_bytes = len(self._text.encode())
            self._base += pos
            self._pos = 0
        return True

    def _give_up(self) -> None:
        self.usable = False
        self._text, self._text_bytes = "", 0

    def _give_up_with(self, audio: bytes, alignment: dict[str, Any] | None) -> tuple[bytes, dict[str, Any] | None]:
        """Stop tracking: whatever was held goes out ahead of ``audio`` (nothing is lost)."""
        held, out_align = self._held, self._out_align
        if self._per_chunk and len(self._timeline):
            out_align = self._timeline.alignment()
        self._held, self._out_align = b"", None
        self._timeline.clear()
        self._give_up()
        if alignment is not None:
            out_align = _merge(out_align, alignment, self._ms(len(held)))
        return held + audio, out_align


def _strip(alignment: dict[str, Any], count: int) -> dict[str, Any]:
    """``alignment`` without its first ``count`` characters."""
    chars = alignment["chars"]
    i = min(count, len(chars))
    return {"chars": chars[i:], "charStartTimesMs": alignment["charStartTimesMs"][i:],
            "charDurationsMs": alignment["charDurationsMs"][i:]}


def _merge(held: dict[str, Any] | None, new: dict[str, Any], offset_ms: float) -> dict[str, Any]:
    """``new`` (times from its chunk's start, which is ``offset_ms`` in) joined to ``held``."""
    if held is None and not offset_ms:
        return new
    starts = [whole_ms(t + offset_ms) for t in new["charStartTimesMs"]]
    if held is None:
        return {**new, "charStartTimesMs": starts}  # a normalized view keeps its own (chunk-relative) times
    return {"chars": held["chars"] + list(new["chars"]), "charStartTimesMs": held["charStartTimesMs"] + starts,
            "charDurationsMs": held["charDurationsMs"] + list(new["charDurationsMs"])}
