"""Generation triggers: chunk_length_schedule thresholds, auto_mode, try_trigger and flush."""

from __future__ import annotations

import pytest
from emulator.buffering import DEFAULT_SCHEDULE, ScheduleError, TextBuffer, parse_schedule


def test_nothing_due_below_first_threshold() -> None:
    buf = TextBuffer((50, 60))
    assert buf.add("x" * 10 + " ") == []
    assert buf.pending == "x" * 10 + " "


def test_threshold_voices_whole_words_and_keeps_the_partial_one() -> None:
    buf = TextBuffer((50, 60))
    due = buf.add("word " * 11 + "part")
    assert due == ["word " * 11]
    assert buf.pending == "part"


def test_schedule_advances_and_last_value_repeats() -> None:
    buf = TextBuffer((50, 60))
    assert len(buf.add("a" * 49 + " ")) == 1  # reached 50
    assert buf.add("b" * 58 + " ") == []  # 59 < 60
    assert len(buf.add("c ")) == 1  # 61 >= 60
    assert buf.add("d" * 58 + " ") == []
    assert len(buf.add("e ")) == 1  # 60 repeats


def test_flush_takes_everything_without_a_trailing_space() -> None:
    buf = TextBuffer()
    buf.add("no trailing space")
    assert buf.flush() == ["no trailing space"]
    assert buf.flush() == []


def test_auto_mode_generates_per_message() -> None:
    buf = TextBuffer(auto_mode=True)
    assert buf.add("Hi.") == ["Hi."]
    assert buf.add(" There") == [" There"]


def test_try_trigger_needs_a_minimum() -> None:
    buf = TextBuffer()
    buf.add("short ")
    assert buf.try_trigger() == []
    buf.add("x" * 60 + " ")
    assert buf.try_trigger() == ["short " + "x" * 60 + " "]


def test_parse_schedule() -> None:
    assert parse_schedule(None) == DEFAULT_SCHEDULE
    assert parse_schedule({}) == DEFAULT_SCHEDULE
    assert parse_schedule({"chunk_length_schedule": [50, 120.0]}) == (50, 120)
    for bad in ([], [49], [501], ["x"], "50"):
        with pytest.raises(ScheduleError):
            parse_schedule({"chunk_length_schedule": bad})
