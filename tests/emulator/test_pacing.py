"""Real-time pacing: chunks follow the audio clock, and ``pacing_grid_ms`` only ever delays a later
chunk to the next tick (by less than one), never the first."""

from __future__ import annotations

import asyncio

import pytest
from emulator.config import EmulatorConfig
from emulator.formats import parse_output_format
from emulator.generation import on_grid, paced_chunks


def test_on_grid_rounds_up_to_the_tick() -> None:
    assert on_grid(1.2345, 0.0) == 1.2345
    assert on_grid(1.2345, 5.0) == pytest.approx(1.235)
    assert on_grid(1.235, 5.0) == pytest.approx(1.235)
    for t in (0.0001, 3.14159, 1000.0042):
        assert t <= on_grid(t, 5.0) < t + 0.005 + 1e-9


@pytest.mark.parametrize("grid_ms", [0.0, 30.0])
async def test_paced_chunks_are_never_early_and_late_by_less_than_a_tick(grid_ms: float) -> None:
    config = EmulatorConfig(ttfb_ms=40, realtime_factor=4, chunk_ms=120, pacing_grid_ms=grid_ms)
    loop = asyncio.get_running_loop()
    triggered = loop.time()
    start = triggered + 0.040
    produced = 0.0
    firsts = True
    async for chunk in paced_chunks("Paced on a grid.", parse_output_format("pcm_24000"), config, triggered):
        now = loop.time()
        due = start + produced / config.realtime_factor
        if firsts:
            assert now >= start  # the first chunk: exactly TTFB after the trigger, grid or not
            assert now - start < 0.025
            firsts = False
        else:
            assert now >= on_grid(due, grid_ms) - 0.001  # the loop may fire a timer up to 1 ms early
            assert now - due < grid_ms / 1000.0 + 0.025
        produced += chunk.duration_s
