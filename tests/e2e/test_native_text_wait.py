"""A context started without text has no job until its first text (one Redis hop less to first
audio), so the gateway itself ends one that never speaks: ``input_timeout`` after
``UPSTREAM_TEXT_WAIT_S``, whatever the provider, and the session goes on."""

from __future__ import annotations

import asyncio
import time

from tests.compat.conftest import Stack, local_stack
from tests.support.scrape import metric
from tests.support.stack import NativeClient
from tests.support.timing import LOAD_MARGIN_S

TEXT_WAIT_S = 1.0


async def test_a_context_that_never_speaks_ends_with_input_timeout(redis_url: str) -> None:
    async with local_stack(redis_url, upstream_text_wait_s=TEXT_WAIT_S) as stack, \
            NativeClient.connect(stack.base, stack.http) as c:
        jobs_before = await jobs_done(stack)
        t0 = time.monotonic()
        await c.send(type="start", context_id="mute", voice="joe", format="pcm_16000")
        # Blank text is a keep-alive, not something to synthesize: it neither starts a job nor resets the wait.
        await c.send(type="text", context_id="mute", text=" ")
        await c.pump_until(lambda c: c.ended("mute"), timeout=TEXT_WAIT_S + LOAD_MARGIN_S)
        waited = time.monotonic() - t0
        mute = c.result("mute")
        assert mute.error is not None and mute.error["code"] == "input_timeout", mute.error
        assert waited >= TEXT_WAIT_S
        assert not mute.frames
        # The session stays usable, and the next context speaks.
        said = await c.speak("said", "Now there is something to say.", timeout=30, voice="joe",
                             format="pcm_16000")
        assert said.final is not None and said.audio
        assert not c.session_errors
        # The worker counts a job just after its final went out: wait for "said" to be counted.
        deadline = time.monotonic() + LOAD_MARGIN_S
        while (jobs_after := await jobs_done(stack)) < jobs_before + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert jobs_after == jobs_before + 1  # only the context that spoke ever reached a worker


async def jobs_done(stack: Stack) -> float:
    """Jobs the worker finished, whatever their outcome (its /metrics)."""
    return sum([await metric(stack.http, stack.worker_base, "tts_jobs_total", provider="local", outcome=o)
                for o in ("completed", "failed", "cancelled", "orphaned")])
