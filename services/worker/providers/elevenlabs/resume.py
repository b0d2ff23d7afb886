"""Where a context's listener stopped hearing it, so another socket can continue from there (failover).

A context that loses its socket after audio went out cannot be replayed from the start (the listener
would hear it twice), but it can be *resumed*: the upstream's alignment says which characters each
audio chunk voices, so the text after the last character the listener got is what is left to say.

To make the resume point a word boundary, upstream audio is released to the listener only up to the
end of the last whitespace character it voices; the partial word after it waits (at most
:data:`HOLD_MS`, after which it goes out at a character boundary) for the chunk that completes it,
or for the final. On a failover the held audio is dropped (never heard) and the text from the first
word not fully released is sent to the new socket; the whitespace before it marks the cut.

Resuming is possible only while every released chunk carried an alignment that matches the text we
sent (whitespace aside, a few characters of slack for normalisation), the upstream audio can be cut
by sample (PCM, μ-law, A-law: not MP3), and the unspoken text fits ``FAILOVER_TEXT_BYTES``. Otherwise
the context falls back to what it did before failover existed: finish on its socket or fail.
"""

from __future__ import annotations

from typing import Any

from . import messages

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
        self._held_align: list[tuple[str, float, float]] = []  # (char, start ms, duration ms), held audio
        self.failovers: list[dict[str, Any]] = []  # {at_char, reason, cause} per resume, for the final
        self.rebilled_chars = 0  # characters a paid upstream received twice (sent again after a failover)

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
    def take(self, audio: bytes, alignment: dict[str, Any] | None) -> tuple[bytes, dict[str, Any] | None]:
        """Upstream ``audio`` in; what may reach the listener now out (the rest is held).

        An alignment starts at its chunk's start but may run past it: without ``sync_alignment`` the
        upstream times a whole generation on its first chunk and sends none after (the characters
        then wait here until their audio arrives)."""
        if not self.usable:
            return audio, alignment
        if len(audio) % self._width:
            return self._give_up_with(audio, alignment)
        covered = _end(self._held_align[-1]) if self._held_align else 0.0
        if alignment is None and self._ms(len(self._held)) >= covered - _SLACK_MS:
            return self._give_up_with(audio, None)  # audio past every timed character: untrackable
        if alignment is not None:
            chars, starts, durs = alignment["chars"], alignment["charStartTimesMs"], alignment["charDurationsMs"]
            if not len(chars) == len(starts) == len(durs):
                return self._give_up_with(audio, alignment)
            shift = self._ms(len(self._held))
            self._held_align += [(c, s + shift, d) for c, s, d in zip(chars, starts, durs, strict=True)]
        self._held += audio
        held_ms = self._ms(len(self._held))
        if held_ms > (_end(self._held_align[-1]) if self._held_align else 0.0) + UNEXPLAINED_MS:
            return self._give_up_with(b"", None)  # audio no alignment explains: what it voices is unknown
        heard = 0  # characters whose audio is all here
        while heard < len(self._held_align) and _end(self._held_align[heard]) <= held_ms + _SLACK_MS:
            heard += 1
        cut = _last_space(self._held_align[:heard])
        if cut == 0:
            if held_ms <= HOLD_MS:
                return b"", None
            cut = heard  # one long run without spaces: release whole characters
            if cut == 0:
                return self._give_up_with(b"", None)  # audio that no alignment explains
        cut_ms = min(held_ms, _end(self._held_align[cut - 1]))
        byte = round(cut_ms * self._rate / 1000) * self._width
        if cut == len(self._held_align) and held_ms - cut_ms < _SLACK_MS:
            byte = len(self._held)  # alignment rounding must not leave a sliver held
        byte = min(byte, len(self._held))
        out, self._held = self._held[:byte], self._held[byte:]
        released, rest = self._held_align[:cut], self._held_align[cut:]
        shift = self._ms(byte)
        self._held_align = [(c, s - shift, d) for c, s, d in rest]
        if not self._advance(released):
            held, self._held, self._held_align = self._held, b"", []
            return out + held, _alignment(released + [(c, s + shift, d) for c, s, d in rest])
        return out, _alignment(released)

    def release(self) -> tuple[bytes, dict[str, Any] | None]:
        """The final arrived: everything held goes out."""
        audio, align = self._held, self._held_align
        self._held, self._held_align = b"", []
        if align:
            self._advance(align)
        return audio, (_alignment(align) if align else None)

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
        self._held, self._held_align = b"", []

    def resume(self, reason: str, cause: str) -> None:
        """Drop held audio and record the failover; the text from :attr:`at_char` on is sent again."""
        at = self.at_char
        self._held, self._held_align = b"", []
        rest_from = at - self._base
        remaining = self._text[rest_from:]
        self.failovers.append({"at_char": at, "reason": reason, "cause": cause})
        self.rebilled_chars += len(remaining)  # the old socket had this text too: billed there as well
        self._text, self._base, self._pos = remaining, at, 0
        self._text_bytes = len(remaining.encode())

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
    def _advance(self, released: list[tuple[str, float, float]]) -> bool:
        """Move the text cursor over ``released`` characters; False (and unusable) if they do not match."""
        text, pos = self._text, self._pos
        for char, _, _ in released:
            if char.isspace():
                while pos < len(text) and text[pos].isspace():
                    pos += 1
                continue
            while pos < len(text) and text[pos].isspace():
                pos += 1
            found = text.find(char, pos, pos + 1 + _LOOKAHEAD)
            if found < 0:
                self.usable = False
                return False
            pos = found + 1
        self._pos = pos
        if pos > 4096:  # drop what was said: the text kept is only what may still need saying
            self._text = text[pos:]
            self._text_bytes = len(self._text.encode())
            self._base += pos
            self._pos = 0
        return True

    def _give_up(self) -> None:
        self.usable = False
        self._text, self._text_bytes = "", 0

    def _give_up_with(self, audio: bytes, alignment: dict[str, Any] | None) -> tuple[bytes, dict[str, Any] | None]:
        """Stop tracking: whatever was held goes out ahead of ``audio`` (nothing is lost)."""
        held, held_align = self._held, self._held_align
        self._held, self._held_align = b"", []
        self._give_up()
        if not held:
            return audio, alignment
        merged = _alignment(held_align)
        if alignment is not None:
            offset = self._ms(len(held))
            merged = {"chars": merged["chars"] + list(alignment["chars"]),
                      "charStartTimesMs": merged["charStartTimesMs"]
                      + [t + offset for t in alignment["charStartTimesMs"]],
                      "charDurationsMs": merged["charDurationsMs"] + list(alignment["charDurationsMs"])}
        return held + audio, merged


def _end(entry: tuple[str, float, float]) -> float:
    return entry[1] + entry[2]


def _last_space(align: list[tuple[str, float, float]]) -> int:
    """Number of characters up to and including the last whitespace one (0: none)."""
    for i in range(len(align) - 1, -1, -1):
        if align[i][0].isspace():
            return i + 1
    return 0


def _alignment(align: list[tuple[str, float, float]]) -> dict[str, Any]:
    """ElevenLabs' per-chunk alignment shape for ``align`` (times already from the chunk's start)."""
    return {"chars": [c for c, _, _ in align], "charStartTimesMs": [_num(s) for _, s, _ in align],
            "charDurationsMs": [d for _, _, d in align]}


def _num(v: float) -> float:
    """Keep whole milliseconds whole (the upstream sends integers; a shift by held audio is exact here)."""
    return int(v) if float(v).is_integer() else round(v, 3)
