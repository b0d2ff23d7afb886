"""Timing of a generation: first audio ``ttfb_ms`` after the trigger, then chunks at ``realtime_factor``."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

from emulator.config import EmulatorConfig
from emulator.speech import AudioChunk, iter_chunks
from shared.audio import AudioFormat


async def sleep_until(deadline: float) -> None:
    """Sleep until the event loop's clock reaches ``deadline`` (no-op if already past)."""
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def paced_chunks(
    text: str, fmt: AudioFormat, config: EmulatorConfig, triggered_at: float
) -> AsyncIterator[AudioChunk]:
    """Yield the audio chunks of ``text`` when a real server would have them ready."""
    loop = asyncio.get_running_loop()
    # A generation queued behind another one still counts its TTFB from its own trigger.
    start = max(loop.time(), triggered_at + config.ttfb_ms / 1000.0)
    await sleep_until(start)
    produced_s = 0.0
    for chunk in iter_chunks(text, fmt, config.ms_per_char, config.chunk_ms):
        if config.realtime_factor > 0 and produced_s > 0:
            await sleep_until(on_grid(start + produced_s / config.realtime_factor, config.pacing_grid_ms))
        yield chunk
        produced_s += chunk.duration_s


def on_grid(deadline: float, grid_ms: float) -> float:
    """``deadline`` rounded up to the next multiple of ``grid_ms`` (unchanged when the grid is 0).

    Timers due on one tick fire in one pass of the event loop: at a thousand streams that is one wake-up
    (and one ``epoll_wait``) for many chunks instead of one per chunk. A chunk is late by less than a
    tick and never early; the first chunk is not moved, so the time to first audio stays exact.
    """
    if grid_ms <= 0:
        return deadline
    step = grid_ms / 1000.0
    return math.ceil(deadline / step - 1e-9) * step  # a deadline on a tick stays there despite float error
