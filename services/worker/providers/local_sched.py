"""Who synthesizes next on the local voice's threads: the stream closest to running dry.

Every stream of a worker shares ``threads`` synthesis slots. Served in turn (one piece per stream,
first come first served), a burst of new contexts queued ahead of turns that were already playing
and those went 9-11 s without audio. Here a free slot goes to the waiting stream with the least
audio buffered ahead of real time: audio produced so far minus the wall time since its first
audio (what its listener still has to play). A stream that has produced nothing yet ranks as if
it had ``first_piece_ahead_s`` buffered, so a playing stream about to run dry comes first, first
pieces of new contexts next, and a stream far ahead waits while others need the slot (the slots
are never left idle: with nobody else waiting it runs at full speed). Ties go to the earliest
waiter.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

# A new context's first piece ranks behind playing streams with less than this buffered.
DEFAULT_FIRST_PIECE_AHEAD_S = 0.5


@dataclass
class Playback:
    """How far ahead of real time one stream's listener is (updated on the event loop)."""

    first_audio_at: float | None = None
    produced_s: float = 0.0

    def add(self, seconds: float) -> None:
        """Audio of ``seconds`` left the stream."""
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
        self.produced_s += seconds

    def ahead_s(self, now: float, first_piece_ahead_s: float) -> float:
        """Audio the listener has buffered beyond now (negative: it is already starving)."""
        if self.first_audio_at is None:
            return first_piece_ahead_s
        return self.produced_s - (now - self.first_audio_at)


@dataclass(order=True)
class _Waiter:
    serial: int
    playback: Playback = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False)


class NeedScheduler:
    """``threads`` slots handed out by need; ``async with turn(playback)`` holds one."""

    def __init__(self, slots: int, first_piece_ahead_s: float = DEFAULT_FIRST_PIECE_AHEAD_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = slots
        self.first_piece_ahead_s = first_piece_ahead_s
        self._clock = clock
        self._busy = 0
        self._waiting: list[_Waiter] = []
        self._serial = itertools.count()

    @property
    def busy(self) -> int:
        """Slots in use."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Streams waiting for a slot."""
        return len(self._waiting)

    @asynccontextmanager
    async def turn(self, playback: Playback) -> AsyncIterator[None]:
        """Wait for a slot (by need), hold it for the body, then hand it to the neediest waiter."""
        if self._busy < self.slots and not self._waiting:
            self._busy += 1
        else:
            waiter = _Waiter(next(self._serial), playback, asyncio.get_running_loop().create_future())
            self._waiting.append(waiter)
            try:
                await waiter.granted
            except asyncio.CancelledError:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                elif waiter.granted.done() and not waiter.granted.cancelled():
                    self._release()  # granted and cancelled in the same moment: pass the slot on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._busy -= 1
        if self._waiting and self._busy < self.slots:
            now = self._clock()
            neediest = min(self._waiting,
                           key=lambda w: (w.playback.ahead_s(now, self.first_piece_ahead_s), w.serial))
            self._waiting.remove(neediest)
            self._busy += 1
            neediest.granted.set_result(None)
