"""Real-time pacing: chunks follow the audio clock, and ``pacing_grid_ms`` only ever delays a later
chunk to the next tick (by less than one), never the first."""

from __future__ import annotations

import asyncio

import pytest
from emulator import generation
from emulator.config import EmulatorConfig
from emulator.formats import parse_output_format
from emulator.generation import on_grid, paced_chunks, sleep_until


def test_on_grid_rounds_up_to_the_tick() -> None:
    assert on_grid(1.2345, 0.0) == 1.2345
    assert on_grid(1.2345, 5.0) == pytest.approx(1.235)
    assert on_grid(1.235, 5.0) == pytest.approx(1.235)
    for t in (0.0001, 3.14159, 1000.0042):
        assert t <= on_grid(t, 5.0) < t + 0.005 + 1e-9


@pytest.mark.parametrize("grid_ms", [0.0, 30.0])
async def test_each_chunk_is_due_on_the_audio_clock_and_a_later_one_on_the_next_tick(
        grid_ms: float, monkeypatch: pytest.MonkeyPatch) -> None:
    # When each chunk is due is the emulator's; how punctually the event loop then fires a timer is not
    # (and on a shared box is no promise at all). So the deadlines the generator sleeps until are
    # recorded, not slept: the TTFB can be long enough that no stall of this process moves the start.
    config = EmulatorConfig(ttfb_ms=10_000, realtime_factor=4, chunk_ms=120, pacing_grid_ms=grid_ms)
    deadlines: list[float] = []

    async def record(deadline: float) -> None:
        deadlines.append(deadline)

    monkeypatch.setattr(generation, "sleep_until", record)
    triggered = asyncio.get_running_loop().time()
    start = triggered + 10.0
    produced = 0.0
    chunks = 0
    async for chunk in paced_chunks("Paced on a grid.", parse_output_format("pcm_24000"), config, triggered):
        chunks += 1
        assert len(deadlines) == chunks  # one wait before each chunk, the chunk only after it
        if chunks == 1:
            assert deadlines[0] == start  # exactly TTFB after the trigger, grid or not
        else:
            due = start + produced / config.realtime_factor
            assert deadlines[-1] == on_grid(due, grid_ms)
            assert due - 1e-9 <= deadlines[-1] < due + grid_ms / 1000.0 + 1e-9  # never early, < a tick late
        produced += chunk.duration_s
    assert chunks > 2


async def test_sleep_until_never_returns_before_its_deadline() -> None:
    loop = asyncio.get_running_loop()
    for delay in (0.0, 0.003, 0.02):
        deadline = loop.time() + delay
        await sleep_until(deadline)
        assert loop.time() >= deadline - 0.001  # the loop may fire a timer up to 1 ms early
