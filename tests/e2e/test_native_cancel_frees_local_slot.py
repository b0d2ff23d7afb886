"""The native ``cancel`` is the immediate path end to end: final at once, synthesis stopped, slot free."""

from __future__ import annotations

import time

from tests.compat.conftest import local_stack
from tests.support.scrape import metric
from tests.support.stack import NativeClient
from tests.support.timing import LOAD_MARGIN_S


async def test_native_cancel_stops_synthesis_and_frees_the_slot(redis_url: str) -> None:
    long_text = " ".join(["This turn would keep the worker's only local voice stream busy for a long time."] * 6)
    jobs = {"provider": "local", "outcome": "cancelled"}
    async with local_stack(redis_url, local_voice_max_streams=1) as stack, \
            NativeClient.connect(stack.base, stack.http) as c:
        cancelled = await metric(stack.http, stack.worker_base, "tts_jobs_total", **jobs)
        await c.send(type="start", context_id="old", voice="joe", text=long_text, end=True, format="pcm_16000")
        await c.pump_until(lambda c: bool(c.result("old").frames), timeout=30)
        t0 = time.monotonic()
        await c.send(type="cancel", context_id="old")
        await c.pump_until(lambda c: c.ended("old"), timeout=5)
        final_after = time.monotonic() - t0
        # The worker's one stream is free again: the next context is not refused as overloaded.
        await c.send(type="start", context_id="new", voice="joe", text="There is room again.", end=True,
                     format="pcm_16000")
        await c.pump_until(lambda c: c.ended("new"), timeout=30)
        cancelled_after = await metric(stack.http, stack.worker_base, "tts_jobs_total", **jobs)
    old, new = c.result("old"), c.result("new")
    # At once, not after the ~30 s the rest of the text would take.
    assert old.final is not None and old.final["reason"] == "cancelled" and final_after < LOAD_MARGIN_S
    assert new.error is None and new.final is not None and new.final["reason"] == "completed"
    assert len(new.audio) / 32000 > 0.5
    # The job ended as cancelled: synthesis stopped instead of running the long text to its end.
    assert cancelled_after == cancelled + 1
    spoken_s = len(old.audio) / 32000
    assert spoken_s < 20  # a fraction of the ~30 s the whole text would make
