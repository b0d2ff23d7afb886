"""Text buffering that decides when generation starts: ElevenLabs' chunk_length_schedule and auto_mode."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_SCHEDULE: tuple[int, ...] = (120, 160, 250, 290)
SCHEDULE_MIN, SCHEDULE_MAX = 50, 500
# ``try_trigger_generation`` generates early only past this many buffered characters (the real
# minimum is unpublished; the schedule's own floor is the least surprising choice).
TRY_TRIGGER_MIN_CHARS = SCHEDULE_MIN


class ScheduleError(ValueError):
    """A ``chunk_length_schedule`` that ElevenLabs would reject."""


def parse_schedule(generation_config: Any) -> tuple[int, ...]:
    """Read ``chunk_length_schedule`` from a generation_config object (absent or null = the default)."""
    if generation_config is None:
        return DEFAULT_SCHEDULE
    if not isinstance(generation_config, dict):
        raise ScheduleError("generation_config must be an object")
    schedule = generation_config.get("chunk_length_schedule")
    if schedule is None:
        return DEFAULT_SCHEDULE
    if not isinstance(schedule, list) or not schedule:
        raise ScheduleError("chunk_length_schedule must be a non-empty list of numbers")
    values: list[int] = []
    for item in schedule:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ScheduleError("chunk_length_schedule must contain numbers only")
        if not SCHEDULE_MIN <= item <= SCHEDULE_MAX:
            raise ScheduleError(
                f"chunk_length_schedule values must be between {SCHEDULE_MIN} and {SCHEDULE_MAX}, got {item}"
            )
        values.append(int(item))
    return tuple(values)


class TextBuffer:
    """Accumulates a context's text and hands out the segments that are due for generation."""

    def __init__(self, schedule: Sequence[int] = DEFAULT_SCHEDULE, auto_mode: bool = False) -> None:
        """Trigger at ``schedule`` thresholds (the last repeats), or per message when ``auto_mode``."""
        self._schedule = tuple(schedule) or DEFAULT_SCHEDULE
        self._auto_mode = auto_mode
        self._generations = 0
        self._text = ""

    @property
    def pending(self) -> str:
        """Text received but not yet handed out for generation."""
        return self._text

    def _threshold(self) -> int:
        return self._schedule[min(self._generations, len(self._schedule) - 1)]

    def _take(self, end: int) -> str:
        segment, self._text = self._text[:end], self._text[end:]
        self._generations += 1
        return segment

    def add(self, text: str) -> list[str]:
        """Append ``text``; return the segments now due (auto_mode: everything buffered)."""
        self._text += text
        if self._auto_mode:
            return self.flush()
        due: list[str] = []
        while self._text and len(self._text) >= self._threshold():
            due.append(self._take(self._cut_point()))
        return due

    def try_trigger(self) -> list[str]:
        """Generate early if enough text is buffered (``try_trigger_generation``)."""
        if len(self._text) >= TRY_TRIGGER_MIN_CHARS:
            return [self._take(self._cut_point())]
        return []

    def flush(self) -> list[str]:
        """Hand out everything buffered, a trailing partial word included (flush, EOS, close)."""
        return [self._take(len(self._text))] if self._text else []

    def _cut_point(self) -> int:
        # A threshold voices whole words only: the word still being typed waits for more text,
        # unless the buffer is one long run without whitespace.
        for index in range(len(self._text) - 1, -1, -1):
            if self._text[index].isspace():
                return index + 1
        return len(self._text)
