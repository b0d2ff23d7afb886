"""A worker SIGKILLed mid-utterance: typed errors within ~2 s, transparent retries before audio, no orphans."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
from emulator.synth import decode_text

from tests.faults.support import assert_no_orphans, report, start_stack, until
from tests.support.procs import Procs
from tests.support.stack import NativeClient
from tests.support.timing import LOAD_MARGIN_S

SPEECH = "This utterance is still being spoken when its worker dies without a word. " * 3


async def test_worker_sigkill_fails_speaking_contexts_and_retries_silent_ones(procs: Procs, redis_url: str) -> None:
    # Production heartbeat timings (0.4 s beat, 1.5 s TTL): the figure measured here is the real one.
    stack = await start_stack(procs, redis_url, emulator={"realtime_factor": 2, "chunk_ms": 100},
                              HEARTBEAT_INTERVAL_S=0.4, HEARTBEAT_TTL_S=1.5)
    doomed = stack.workers[0]
    async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as clients:
        speaking = [await clients.enter_async_context(NativeClient.connect(stack.base, http)) for _ in range(4)]
        silent = [await clients.enter_async_context(NativeClient.connect(stack.base, http)) for _ in range(4)]
        for c in speaking:
            await c.send(type="start", context_id="s", format="pcm_16000", text=SPEECH, end=True)
        for c in silent:  # running on the worker, text buffered, nothing flushed: no audio yet
            await c.send(type="start", context_id="q", format="pcm_16000", text="Quiet words ")
        for c in speaking:
            await c.pump_until(lambda c: len(c.result("s").frames) >= 2, 20)
        for c in silent:
            await c.pump_until(lambda c: c.result("q").started is not None, 20)
        # Every job runs on the doomed worker; the survivor only joins now.
        survivor = stack.add_worker("survivor")
        await procs.ready(survivor)
        assert (await stack.emu_stats())["contexts_active"] == 8

        t_kill = time.monotonic()
        doomed.kill()
        ended_at: dict[int, float] = {}

        async def wait_end(i: int, c: NativeClient) -> None:
            await c.pump_until(lambda c: c.ended("s"), 15)
            ended_at[i] = time.monotonic() - t_kill

        await asyncio.gather(*(wait_end(i, c) for i, c in enumerate(speaking)))
        # The silent contexts were re-run on the survivor with the text they had; more text follows.
        for c in silent:
            await c.send(type="text", context_id="q", text="and then some more.")
            await c.send(type="end", context_id="q")
        t_more = time.monotonic()
        for c in silent:
            await c.pump_until(lambda c: c.ended("q"), 15)
        silent_done = time.monotonic() - t_more
        # Every session is still usable: a fresh context completes on the survivor.
        for c in [*speaking, *silent]:
            res = await c.speak("after", "Back again.", format="pcm_16000", timeout=15)
            assert res.final is not None and decode_text(res.audio, 16000) == "Back again.", res.error

    for c in speaking:
        res = c.result("s")
        assert res.error is not None and res.error["code"] == "worker_lost", res.events[-2:]
        assert res.final is None and len(res.frames) >= 2
        assert res.seqs == list(range(len(res.frames)))  # no gap, no replay before the error
        assert SPEECH.startswith(decode_text(res.audio, 16000).rstrip("\ufffd"))
    for c in silent:
        res = c.result("q")
        assert res.error is None and res.final is not None, res.error
        assert decode_text(res.audio, 16000) == "Quiet words and then some more."  # once, complete
    worst = max(ended_at.values())
    # Promised ~2 s (1.5 s heartbeat TTL + 0.2 s monitor pass); without it the 15 s inter-chunk deadline
    # would end them (and with ``timeout``, not ``worker_lost``).
    assert worst < 1.5 + 0.2 + LOAD_MARGIN_S, ended_at

    lost = stack.gateway.events("worker_lost")
    assert len(lost) == 8 and {e["audio_chunks"] > 0 for e in lost} == {True, False}
    retries = [e for e in stack.gateway.events("context_retry") if e["reason"] == "worker_lost"]
    assert len(retries) == 4
    await assert_no_orphans(redis_url)
    # The dead worker's upstream sockets died with it: the emulator lets go of all its contexts.
    await until(stack.emu_idle, 30, "emulator contexts back to zero")
    report("worker_killed", speaking_contexts=4, silent_contexts=4, worker_lost_after_s_max=round(worst, 3),
           worker_lost_after_s_min=round(min(ended_at.values()), 3), silent_retried=4,
           silent_completed_after_more_text_s=round(silent_done, 3), heartbeat_ttl_s=1.5)

