"""The compatible WebSocket on the local Piper voice: real speech, alignment, barge-in."""

from __future__ import annotations

import time

from shared.audio.analysis import rms
from tests.compat.conftest import local_stack
from tests.compat.elclient import ElClient
from tests.support.timing import LOAD_MARGIN_S


async def test_local_voice_multi_stream_with_alignment(local) -> None:
    text = "Hello there. This is the local voice."
    async with ElClient.connect(local.base, local.http, output_format="pcm_22050", sync_alignment=True) as c:
        await c.send(text=" ", context_id="a", voice_settings={})
        await c.send(text=text, context_id="a", flush=True)
        await c.send(context_id="a", close_context=True)
        await c.pump_until(lambda c: c.final("a"), timeout=30)
    rec = c.get("a")
    seconds = len(rec.audio) / 2 / 22050
    assert 1.0 < seconds < 6.0 and rms(rec.audio) > 0.01
    assert " ".join(rec.chars.split()) == text  # every character, in order, timed
    for al in rec.alignments:
        if al:
            assert all(s >= 0 for s in al["charStartTimesMs"]) and all(d >= 0 for d in al["charDurationsMs"])


async def test_local_voice_barge_in_with_new_ids(local) -> None:
    async with ElClient.connect(local.base, local.http, output_format="pcm_16000") as c:
        for i in range(7):
            cid = f"turn{i}"
            await c.send(text=" ", context_id=cid)
            await c.send(text=f"Answer number {i} goes on for a little while before it ends.", context_id=cid,
                         flush=True)
            if i < 6:  # the user interrupts every turn but the last one
                await c.pump_until(lambda c, cid=cid: bool(c.get(cid).chunks), timeout=30)
                await c.send(context_id=cid, close_context=True)
        await c.send(context_id="turn6", close_context=True)
        await c.pump_until(lambda c: all(c.final(f"turn{i}") for i in range(7)), timeout=60)
        await c.quiet_for(0.3)
    for i in range(7):
        rec = c.get(f"turn{i}")
        assert rec.finals == 1 and rec.frames_after_final == 0 and not rec.errors
        assert len(rec.audio) / 32000 > 1.0


async def test_beyond_capacity_a_context_is_refused_and_an_immediate_close_frees_the_slot(redis_url: str) -> None:
    """One real-time stream fits (LOCAL_VOICE_MAX_STREAMS=1): the next is refused at once with a retryable
    ``overloaded``, the playing one is untouched, and barging in with ``immediate`` frees its slot at once."""
    long_text = " ".join(["This answer keeps the only local voice stream of the worker busy for a while."] * 4)
    async with local_stack(redis_url, local_voice_max_streams=1) as stack, \
            ElClient.connect(stack.base, stack.http, output_format="pcm_16000") as c:
        await c.send(text=long_text, context_id="playing", flush=True)
        await c.pump_until(lambda c: bool(c.get("playing").chunks), timeout=30)
        t0 = time.monotonic()
        await c.send(text="One stream too many.", context_id="extra", flush=True)
        await c.pump_until(lambda c: c.final("extra"), timeout=10)
        refused_after = time.monotonic() - t0
        await c.send(context_id="playing", close_context=True, immediate=True)
        await c.pump_until(lambda c: c.final("playing"), timeout=5)
        await c.send(text="Now there is room.", context_id="next", flush=True)
        await c.send(context_id="next", close_context=True)
        await c.pump_until(lambda c: c.final("next"), timeout=30)
    extra = c.get("extra")
    assert [e["error"] for e in extra.errors] == ["overloaded"] and extra.audio == b"" and extra.finals == 1
    # At once (one transparent retry included), not after the ~15 s the playing stream would take.
    assert refused_after < 1.0 + LOAD_MARGIN_S
    playing = c.get("playing")
    assert playing.finals == 1 and not playing.errors and playing.frames_after_final == 0
    nxt = c.get("next")
    assert not nxt.errors and nxt.finals == 1 and len(nxt.audio) / 32000 > 0.5 and rms(nxt.audio) > 0.01
