"""Timing of a generation: first audio ``ttfb_ms`` after the trigger, then chunks at ``realtime_factor``."""

from __future__ import annotations

import asyncio
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
        if config.realtime_factor > 0:
            await sleep_until(start + produced_s / config.realtime_factor)
        yield chunk
        produced_s += chunk.duration_s
