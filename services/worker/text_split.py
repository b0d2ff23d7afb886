"""Cut incrementally arriving text into speakable pieces: sentences, and long sentences at clause boundaries.

A local voice synthesizes a whole piece before any of its audio exists, and its cost grows with the
piece (one 210-word run-on sentence took 10 s and 1.6 GB in one go), so pieces are bounded in words.
Every decision depends only on words already complete (followed by whitespace), never on how the text
was chunked: feeding token by token yields exactly the pieces that feeding the whole text does.

The first piece of a stream also ends at its first clause boundary (once it has two words), so the
opening "Thanks for calling, how can I help you with your order today?" starts speaking after
synthesizing "Thanks for calling," (~40 ms on one core) instead of the whole sentence (~130 ms).
Each piece says whether it ends or begins inside a sentence (:class:`Piece`), so the voice can
join such pieces without a seam.
"""

from __future__ import annotations

import re
from typing import Self

_TOKEN = re.compile(r"(\S+)(\s+)")
_CLOSERS = "\"'”’»)]}"
_SENTENCE_END = re.compile(r"[.!?…]+[" + re.escape(_CLOSERS) + r"]*$")
_CLAUSE_END = re.compile(r"[,;:—–]+[" + re.escape(_CLOSERS) + r"]*$|^[—–-]+$")
_INITIALISM = re.compile(r"^(?:[A-Za-z]\.)+$")  # e.g. i.e. U.S. J.
_ENUMERATOR = re.compile(r"^\(?\d+[.)]$")  # "1." opening a list item
_SPEAKABLE = re.compile(r"\w")
# Abbreviations that rarely end a sentence; "etc." and "No." often do, so they are not listed.
_ABBREVIATIONS = frozenset(
    ("dr", "mr", "mrs", "ms", "mx", "prof", "sr", "jr", "st", "mt", "ft", "vs", "cf", "approx", "fig")
    + ("gen", "gov", "lt", "col", "sgt", "capt", "rev", "hon", "dept", "est")
)
# Splitting before one of these keeps a clause whole when a long sentence has no punctuation to cut at.
_CONJUNCTIONS = frozenset(
    ("and", "but", "or", "nor", "so", "yet", "because", "although", "though", "while", "whereas")
    + ("which", "who", "whom", "whose", "where", "when", "unless", "until", "since", "if")
)

DEFAULT_MAX_WORDS = 25
DEFAULT_FIRST_MAX_WORDS = 12
DEFAULT_MIN_WORDS = 4
# Fewer words than this before the first comma ("Yes," "Well,") stay with what follows: a one-word
# piece saves little synthesis time and is the choppiest to join.
DEFAULT_FIRST_CLAUSE_WORDS = 2


class Piece(str):
    """A piece of text to speak, and whether the sentence it belongs to goes on across its ends.

    ``continued``: the piece was cut inside a sentence (clause boundary or word limit), so the
    next piece continues it. ``continues``: this piece begins inside a sentence the previous piece
    began. Compares and hashes as the plain text.
    """

    continued: bool
    continues: bool

    def __new__(cls, text: str, *, continued: bool = False, continues: bool = False) -> Self:
        """The text with its two flags."""
        piece = super().__new__(cls, text)
        piece.continued = continued
        piece.continues = continues
        return piece


def is_sentence_end(word: str, first_in_piece: bool = False) -> bool:
    """True if ``word`` (followed by whitespace) ends a sentence: terminal punctuation, not an abbreviation."""
    if not _SENTENCE_END.search(word):
        return False
    bare = word.strip(_CLOSERS + "\"'“‘«([{")
    if bare.endswith("."):
        stem = bare[:-1]
        if stem.lower() in _ABBREVIATIONS or _INITIALISM.match(bare):
            return False
        if first_in_piece and _ENUMERATOR.match(bare):
            return False
    return True


class TextSplitter:
    """Accumulate text and return the pieces that are complete.

    A piece ends at a sentence end (terminal punctuation followed by whitespace, abbreviations such as
    "Dr." or "e.g." excepted; decimals such as "3.14" never end one), at a line break, or when it
    reaches its word limit (``first_max_words`` at first, so first audio comes fast, growing to
    twice the words already emitted, up to ``max_words``, so the next piece is ready before the audio
    before it runs out): it is then cut at its last clause boundary (``,;:`` or a dash), else before its last
    conjunction, else after the last whole word, but never leaving fewer than ``min_words`` in it.
    Words are never split. Pieces are the words joined by single spaces; pieces with nothing
    speakable (only punctuation) are dropped. Until the first piece is out, a clause boundary
    ends it as soon as it has ``first_clause_words`` words (0 or None: no such early cut).
    """

    def __init__(
        self,
        max_words: int = DEFAULT_MAX_WORDS,
        first_max_words: int | None = DEFAULT_FIRST_MAX_WORDS,
        min_words: int = DEFAULT_MIN_WORDS,
        first_clause_words: int | None = DEFAULT_FIRST_CLAUSE_WORDS,
    ) -> None:
        """Bound pieces to ``max_words`` words (the first piece to ``first_max_words``)."""
        if max_words < 1 or min_words < 1:
            raise ValueError("max_words and min_words must be >= 1")
        self.max_words = max_words
        self.first_max_words = min(first_max_words or max_words, max_words)
        self.min_words = min(min_words, self.first_max_words)
        self._buf = ""
        self.first_clause_words = first_clause_words or 0
        self._words: list[str] = []
        self._emitted_words = 0
        self._inside = False  # the last piece out was cut inside a sentence

    @property
    def pending(self) -> str:
        """Text held back, not yet part of any returned piece."""
        return " ".join([*self._words, self._buf.strip()]).strip()

    def feed(self, text: str) -> list[Piece]:
        """Add text; return the pieces it completed (maybe none)."""
        self._buf += text
        out: list[Piece] = []
        pos = 0
        for m in _TOKEN.finditer(self._buf):
            word, space = m.group(1), m.group(2)
            ends_sentence = is_sentence_end(word, first_in_piece=not self._words)
            if not ends_sentence and m.end() == len(self._buf):
                break  # the whitespace run may go on (a newline is a break): wait for the next word
            pos = m.end()
            self._words.append(word)
            if ends_sentence or "\n" in space:
                self._cut(len(self._words), out, inside=False)
            elif self._first_clause_ends(word):
                self._cut(len(self._words), out, inside=True)
            elif len(self._words) >= self._limit():
                self._cut(self._clause_cut(), out, inside=True)
        self._buf = self._buf[pos:]
        return out

    def flush(self) -> list[Piece]:
        """Return everything held back as pieces (``flush`` or end of input): the last word is complete."""
        out = self.feed(" ")
        self._words.extend(self._buf.split())
        self._buf = ""
        while len(self._words) > self._limit():
            self._cut(self._clause_cut(), out, inside=True)
        self._cut(len(self._words), out, inside=False)  # a flush is where the client says a thought ends
        return out

    def _first_clause_ends(self, word: str) -> bool:
        return (not self._emitted_words and 0 < self.first_clause_words <= len(self._words)
                and _CLAUSE_END.search(word) is not None)

    def _limit(self) -> int:
        # Ramp up: while little audio is buffered ahead of the listener, a long next piece would take
        # longer to synthesize than the audio before it lasts ("Hello!" then a 25-word sentence is
        # an audible gap), so the limit grows with the words already spoken.
        return max(self.first_max_words, min(self.max_words, 2 * self._emitted_words))

    def _clause_cut(self) -> int:
        """How many of the held words form the next piece, the held words having reached the limit."""
        words = self._words[: self._limit()]
        lo = self.min_words
        for n in range(len(words), lo - 1, -1):
            if _CLAUSE_END.search(words[n - 1]):
                return n
        for n in range(len(words) - 1, lo - 1, -1):
            if words[n].lower().strip(_CLOSERS + "\"'“‘(") in _CONJUNCTIONS:
                return n
        return len(words)

    def _cut(self, n: int, out: list[Piece], inside: bool) -> None:
        piece, self._words = self._words[:n], self._words[n:]
        text = " ".join(piece)
        if _SPEAKABLE.search(text):
            out.append(Piece(text, continued=inside, continues=self._inside))
            self._inside = inside
            self._emitted_words += len(piece)


def split_text(text: str, **kwargs: int | None) -> list[Piece]:
    """Split a whole text at once; the same pieces as feeding it in any chunks and flushing."""
    splitter = TextSplitter(**kwargs)  # type: ignore[arg-type]
    return splitter.feed(text) + splitter.flush()
