"""The sentence/clause splitter: where pieces end, and that chunking the input never changes them."""

from __future__ import annotations

import itertools

import pytest
from worker.text_split import TextSplitter, is_sentence_end, split_text

RUN_ON = (
    "the farmer walked down to the river with his old dog and the dog chased a duck into the reeds "
    "while the children laughed from the bridge, and the sun was setting behind the hills so the water "
    "turned gold and the birds went quiet one by one as the evening wind came down from the mountains "
    "and the farmer thought about the harvest that was coming and the rain that had not come; his wife "
    "called from the porch but he did not hear her over the sound of the water rushing past the stones "
    "and the dog barking at nothing in particular as dogs do when the light goes"
)


def feed_in(text: str, size: int, **kwargs: int | None) -> list[str]:
    splitter = TextSplitter(**kwargs)  # type: ignore[arg-type]
    out: list[str] = []
    for i in range(0, len(text), size):
        out += splitter.feed(text[i : i + size])
    return out + splitter.flush()


def test_sentences() -> None:
    text = "Hello world! How are you today? I am fine. Thanks…  Bye."
    assert split_text(text) == ["Hello world!", "How are you today?", "I am fine.", "Thanks…", "Bye."]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert split_text('He said "stop." Then (quietly) he left.') == [
        'He said "stop."',
        "Then (quietly) he left.",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith and Mrs. Jones met St. Peter at noon.",
        "Bring fruit, e.g. apples, i.e. the red ones.",
        "Pi is roughly 3.14 and e is 2.718 or so.",
        "The U.S. team and J. R. R. Tolkien arrived.",
    ],
)
def test_abbreviations_initials_and_decimals_do_not_end_a_sentence(text: str) -> None:
    assert split_text(text, first_clause_words=0) == [text]


def test_is_sentence_end() -> None:
    assert is_sentence_end("end.") and is_sentence_end("really?!") and is_sentence_end('"so."')
    assert not is_sentence_end("Dr.") and not is_sentence_end("e.g.") and not is_sentence_end("3.14")
    assert not is_sentence_end("1.", first_in_piece=True) and is_sentence_end("1990.")


def test_line_breaks_end_pieces_and_list_numbers_stay() -> None:
    text = "Options:\n1. Red apples\n2. Green pears\n\nPick one."
    assert split_text(text) == ["Options:", "1. Red apples", "2. Green pears", "Pick one."]


def test_long_run_on_is_cut_at_clause_boundaries_within_the_word_limit() -> None:
    pieces = split_text(RUN_ON, max_words=25, first_max_words=12)
    words = RUN_ON.split()
    assert " ".join(pieces).split() == words  # nothing lost, reordered or split mid-word
    assert len(pieces[0].split()) <= 12
    assert all(4 <= len(p.split()) <= 25 for p in pieces[:-1])
    # Cuts land after clause punctuation or before a conjunction wherever one exists in range.
    for piece, nxt in itertools.pairwise(pieces):
        assert piece.endswith((",", ";")) or nxt.split()[0] in {"and", "while", "so", "but", "as"}, (
            piece,
            nxt,
        )
    assert any(p.endswith(",") for p in pieces) and any(p.endswith(";") for p in pieces)


def test_hard_cut_when_there_is_no_boundary_never_splits_words() -> None:
    text = " ".join(f"word{i}" for i in range(60))
    pieces = split_text(text, max_words=25, first_max_words=None)
    assert [len(p.split()) for p in pieces] == [25, 25, 10]
    assert " ".join(pieces) == text


@pytest.mark.parametrize("size", [1, 2, 3, 7, 13])
def test_incremental_feeding_yields_the_same_pieces(size: int) -> None:
    text = "Dr. Who paid 3.14 dollars, e.g. for tea.\nNext line here! " + RUN_ON + ". The end?"
    assert feed_in(text, size) == split_text(text)


def test_token_stream_releases_a_sentence_once_whitespace_follows() -> None:
    splitter = TextSplitter()
    assert splitter.feed("Hello") == [] and splitter.feed(" world") == [] and splitter.feed(".") == []
    assert splitter.feed(" How") == ["Hello world."]
    assert splitter.pending == "How"
    assert splitter.feed(" are 3.") == [] and splitter.feed("14 you") == []
    assert splitter.flush() == ["How are 3.14 you"]
    assert splitter.flush() == []


def test_pieces_without_speakable_text_are_dropped() -> None:
    assert split_text("... — !!! Hi.") == ["Hi."]
    assert split_text("... ?! ") == []


OPENING = "Thanks for calling, how can I help you with your order today?"


def test_first_piece_ends_at_the_first_clause_boundary() -> None:
    """A short first piece for a fast first audio; later sentences keep their commas inside."""
    text = OPENING + " I can check a parcel, change an address, or start a return."
    pieces = split_text(text)
    assert pieces == ["Thanks for calling,", "how can I help you with your order today?",
                      "I can check a parcel, change an address, or start a return."]
    assert [(p.continued, p.continues) for p in pieces] == [(True, False), (False, True), (False, False)]
    assert all(feed_in(text, size) == pieces for size in (1, 3, 8))
    assert [(p.continued, p.continues) for p in feed_in(text, 1)] == [(True, False), (False, True), (False, False)]


def test_a_one_word_opener_stays_with_what_follows() -> None:
    assert split_text("Yes, I can do that for you.") == ["Yes, I can do that for you."]
    assert split_text("Sure, of course, here it is.") == ["Sure, of course,", "here it is."]
    assert split_text(OPENING, first_clause_words=0) == [OPENING]


def test_pieces_cut_inside_a_sentence_say_so() -> None:
    pieces = split_text(RUN_ON + ". Done.", max_words=25, first_max_words=12)
    assert len(pieces) > 3
    assert not pieces[0].continues and all(p.continued for p in pieces[:-2])
    assert all(p.continues for p in pieces[1:-1])
    assert not pieces[-2].continued and not pieces[-1].continues and not pieces[-1].continued
    flushed = TextSplitter()
    assert flushed.feed("Thanks for calling, how can") == ["Thanks for calling,"]
    (rest,) = flushed.flush()
    assert rest == "how can" and rest.continues and not rest.continued
