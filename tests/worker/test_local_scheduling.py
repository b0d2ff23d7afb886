"""The local voice under a burst: turns already playing keep playing; beyond capacity, a clear refusal.

Real model, real threads. A "playing" stream is fed like an LLM-driven agent turn: the next
sentence arrives only when the listener has about 2.5 s of audio left, so it can never be far
ahead. Underrun is computed from each chunk's arrival time and the audio before it: playback
starts at the first chunk, and a chunk arriving after everything before it finished playing is
silence the listener heard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from worker.providers.base import SynthesisRequest
from worker.providers.local import CAPACITY_HEADROOM, LocalProvider, LocalStream
from worker.providers.local_sched import NeedScheduler, Playback
from worker.providers.piper_engine import PiperEngine, get_engine

from shared import errors
from shared.audio.formats import parse_format
from tests.support.timing import LOAD_MARGIN_S

FMT = "pcm_16000"
BYTES_PER_S = parse_format(FMT).bytes_per_second
SENTENCES = [
    "Here is the next part of the answer, spoken as it arrives.",
    "The agent keeps talking while other people start their own turns.",
    "Nobody listening should hear a gap in the middle of a sentence.",
    "A few more words follow, and then the turn comes to an end.",
] * 2
# Each burst context is one sentence: the burst is a spike of first pieces, not a lasting load beyond
# the worker's capacity (past capacity new contexts are refused; see the test below).
BURST_TEXT = "A new caller starts a turn with a long answer to read out loud."
BURST = 40  # served in turn, a playing turn's next sentence would queue behind 40 pieces
BOUND_S = 1.5  # longest silence a playing turn may hear (the old round robin gave 9-11 s under load)


@pytest.fixture(scope="module")
def engine() -> PiperEngine:
    return get_engine()


@pytest.fixture
async def provider(engine: PiperEngine) -> AsyncIterator[LocalProvider]:
    # One slot, so that every piece queued ahead of a playing turn costs it a whole piece of waiting.
    p = LocalProvider(threads=1, max_streams=100)  # refusal off: this test is about scheduling
    await p.start()
    yield p
    await p.close()


def request(key: str) -> SynthesisRequest:
    return SynthesisRequest(key=key, voice_id="joe", model_id="piper", output_format=FMT)


class Listener:
    """Reads one stream, recording (arrival, seconds of audio) per chunk."""

    def __init__(self, stream: LocalStream) -> None:
        self.stream = stream
        self.chunks: list[tuple[float, float]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for chunk in self.stream:
            self.chunks.append((time.monotonic(), len(chunk.audio) / BYTES_PER_S))

    def ahead_s(self) -> float:
        """Audio the listener has not played yet."""
        if not self.chunks:
            return 0.0
        return sum(d for _, d in self.chunks) - (time.monotonic() - self.chunks[0][0])

    def worst_silence_s(self) -> float:
        """Longest stretch the listener had nothing to play, after its first audio."""
        if not self.chunks:
            return float("inf")
        start, played, worst = self.chunks[0][0], 0.0, 0.0
        for at, seconds in self.chunks:
            late = (at - start) - played
            if late > 0:
                worst = max(worst, late)
                start += late  # playback resumes when the late chunk arrives
            played += seconds
        return worst


async def agent_turn(provider: LocalProvider, key: str, started: asyncio.Event) -> Listener:
    """A turn whose text arrives sentence by sentence, each when the listener has ~2.5 s of audio left.

    ``started`` is set just before the third sentence is due: a burst arriving then is queued ahead of it.
    """
    stream = await provider.open_stream(request(key))
    listener = Listener(stream)

    async def until_ahead_below(seconds: float) -> None:
        while not listener.chunks or listener.ahead_s() >= seconds:
            await asyncio.sleep(0.02)

    for i, sentence in enumerate(SENTENCES):
        if i:
            await until_ahead_below(3.0)
            if i == 2:
                started.set()
            await until_ahead_below(2.5)
        await stream.send_text(sentence + " ", flush=True)
    await stream.end_input()
    await listener.task
    return listener


async def test_turns_already_playing_are_not_starved_by_a_burst(provider: LocalProvider) -> None:
    started = [asyncio.Event(), asyncio.Event()]
    playing = [asyncio.create_task(agent_turn(provider, f"agent-{i}", started[i])) for i in range(2)]
    await asyncio.gather(*(e.wait() for e in started))
    burst: list[Listener] = []
    for i in range(BURST):
        stream = await provider.open_stream(request(f"burst-{i}"))
        await stream.send_text(BURST_TEXT)
        await stream.end_input()
        burst.append(Listener(stream))
    agents = await asyncio.wait_for(asyncio.gather(*playing), timeout=120)
    await asyncio.wait_for(asyncio.gather(*(b.task for b in burst)), timeout=120)
    silences = [round(a.worst_silence_s(), 2) for a in agents]
    print("worst silence of playing turns (s):", silences,
          "burst first audio waits (s):", [round(b.chunks[0][0] - agents[0].chunks[0][0], 2) for b in burst])
    assert max(silences) < BOUND_S, silences
    for b in burst:
        assert sum(d for _, d in b.chunks) > 2.0  # every burst context was spoken in full


async def test_a_stream_beyond_capacity_is_refused_at_once(engine: PiperEngine) -> None:
    provider = LocalProvider(threads=2, max_streams=2)
    await provider.start()
    try:
        held = [await provider.open_stream(request(f"s{i}")) for i in range(2)]
        t0 = time.monotonic()
        with pytest.raises(errors.Overloaded) as refused:
            await provider.open_stream(request("one-too-many"))
        assert time.monotonic() - t0 < LOAD_MARGIN_S  # at once: the held streams never end, waiting would hang
        assert refused.value.retryable and refused.value.code == "overloaded"
        status = provider.status()
        assert status["saturated"] and status["capacity_streams"] == 2 and status["active_streams"] == 2
        await held[0].cancel()
        await held[0].wait_closed()
        again = await provider.open_stream(request("fits-again"))  # a freed slot is usable at once
        await again.cancel()
        await held[1].cancel()
    finally:
        await provider.close()


async def test_measured_capacity_comes_from_the_engine(engine: PiperEngine) -> None:
    provider = LocalProvider(threads=2)
    await provider.start()
    try:
        rtf = engine.realtime_factor()
        assert rtf > 0 and provider.realtime_factor == rtf
        assert provider.capacity == max(1, int(rtf * 2 * CAPACITY_HEADROOM))
    finally:
        await provider.close()


async def test_scheduler_serves_the_neediest_first() -> None:
    now = [100.0]
    sched = NeedScheduler(1, first_piece_ahead_s=0.5, clock=lambda: now[0])
    far, starving, new = Playback(100.0, 30.0), Playback(95.0, 5.2), Playback()
    order: list[str] = []

    async def run(name: str, pb: Playback) -> None:
        async with sched.turn(pb):
            order.append(name)
            await asyncio.sleep(0.01)

    async with sched.turn(Playback()):  # the slot is busy while all three queue up
        tasks = [asyncio.create_task(run(n, pb)) for n, pb in (("far", far), ("new", new), ("starving", starving))]
        await asyncio.sleep(0.01)
        assert sched.waiting == 3
    await asyncio.gather(*tasks)
    assert order == ["starving", "new", "far"]  # 0.2 s left, then a first piece (0.5), then 30 s ahead
    assert sched.busy == 0 and sched.waiting == 0
