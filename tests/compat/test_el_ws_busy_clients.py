"""``multi-stream-input`` as busy real clients use it: rounds of contexts awaited in silence,
immediate barge-in, and sockets that never close what the gateway refused.

The emulator paces audio in real time here, so a round's audio really takes longer than the
socket's ``inactivity_timeout`` after the client's last message.
"""

from __future__ import annotations

import time

from emulator.synth import decode_text

from tests.compat.conftest import EL_VOICE, el_stack
from tests.compat.elclient import ElClient
from tests.support.scrape import metric
from tests.support.timing import LOAD_MARGIN_S

# 60 ms of synthetic audio per character: ~2.6 s of audio, played out in real time.
ROUND_TEXT = "This round takes longer than the timeout."


def connect(stack, **query):  # type: ignore[no-untyped-def]
    query.setdefault("output_format", "pcm_16000")
    return ElClient.connect(stack.base, stack.http, voice=EL_VOICE, **query)


async def _round(c: ElClient, ids: list[str]) -> None:
    for cid in ids:
        await c.send(text=" ", context_id=cid)
        await c.send(text=ROUND_TEXT, context_id=cid, flush=True)
        await c.send(context_id=cid, close_context=True)


async def test_socket_waiting_for_its_audio_is_not_idle(redis_url: str) -> None:
    async with el_stack(redis_url, emu_config={"realtime_factor": 1.0, "chunk_ms": 200}) as stack, \
            connect(stack, inactivity_timeout=1) as c:
        await _round(c, ["a1", "a2", "a3"])
        t0 = time.monotonic()
        await c.pump_until(lambda c: all(c.final(x) for x in ("a1", "a2", "a3")), timeout=20)
        waited = time.monotonic() - t0
        # Right after the round's last isFinal the socket is still there (it used to close within 0.2 s)...
        await c.quiet_for(0.5)
        assert c.close_code is None and not c.socket_errors, (c.close_code, c.socket_errors)
        # ... and serves the next round.
        await _round(c, ["b1"])
        await c.pump_until(lambda c: c.final("b1"), timeout=20)
        # Real idleness still closes it, with ElevenLabs' words and 1008.
        t1 = time.monotonic()
        code = await c.drain_until_closed(timeout=10)
        idle_for = time.monotonic() - t1
    assert waited > 1.5  # the round really outlasted the timeout
    for cid in ("a1", "a2", "a3", "b1"):
        rec = c.get(cid)
        assert rec.finals == 1 and not rec.errors and decode_text(rec.audio, 16000) == ROUND_TEXT
    assert code == 1008 and 0.8 < idle_for < 1.0 + LOAD_MARGIN_S
    assert c.socket_errors[-1]["error"] == "timeout"


async def test_immediate_close_context_stops_audio_and_frees_the_upstream(redis_url: str) -> None:
    long_text = "An interrupted turn that would go on talking for many seconds if nobody stopped it."
    async with el_stack(redis_url, emu_config={"realtime_factor": 1.0, "chunk_ms": 200}) as stack, \
            connect(stack) as c:
        assert stack.emu is not None
        jobs = {"provider": "elevenlabs", "outcome": "cancelled"}
        cancelled_jobs = await metric(stack.http, stack.worker_base, "tts_jobs_total", **jobs)
        await c.send(text=" ", context_id="old")
        await c.send(text=long_text, context_id="old", flush=True)
        await c.send(context_id="old", close_context=True)  # LiveKit: the whole turn sent and closed...
        await c.pump_until(lambda c: len(c.get("old").chunks) >= 2, timeout=10)  # ...then the user barges in
        t0 = time.monotonic()
        await c.send(context_id="old", close_context=True, immediate=True)
        await c.pump_until(lambda c: c.final("old"), timeout=5)
        final_after = time.monotonic() - t0
        # The next turn on the same socket is unaffected.
        await c.send(text="Next turn.", context_id="new", flush=True)
        await c.send(context_id="new", close_context=True)
        await c.pump_until(lambda c: c.final("new"), timeout=20)
        await stack.emu.wait_until(lambda s: s.contexts_active == 0, timeout=5)
        await c.quiet_for(0.5)
        # A later close of the cancelled id gets nothing more; an immediate close of an unknown id one final.
        await c.send(context_id="old", close_context=True, immediate=True)
        await c.send(context_id="never", close_context=True, immediate=True)
        await c.pump_until(lambda c: c.final("never"), timeout=5)
        await c.quiet_for(0.3)
        cancelled_after = await metric(stack.http, stack.worker_base, "tts_jobs_total", **jobs)
    old = c.get("old")
    assert old.finals == 1 and old.frames_after_final == 0 and not old.errors
    spoken = decode_text(old.audio, 16000)
    assert long_text.startswith(spoken) and len(spoken) < len(long_text) // 2, spoken
    # At once (the audio itself stopped: see ``spoken``), not after the ~5 s the rest of the turn would take.
    assert final_after < 4.0
    assert decode_text(c.get("new").audio, 16000) == "Next turn."
    assert c.get("never").finals == 1 and not c.socket_errors
    # The job was cancelled like a native cancel (its upstream context closed; ElevenLabs itself still
    # finishes what was flushed, which the worker drops), not run to completion.
    assert cancelled_after == cancelled_jobs + 1


async def test_immediate_close_on_stream_input_ends_the_stream(redis_url: str) -> None:
    async with el_stack(redis_url, emu_config={"realtime_factor": 1.0, "chunk_ms": 200}) as stack, \
            connect(stack, multi=False) as c:
        await c.send(text=" ")
        await c.send(text="A single stream that the client cuts short after a moment.", flush=True)
        await c.pump_until(lambda c: len(c.get(None).chunks) >= 1, timeout=10)
        await c.send(close_context=True, immediate=True)
        code = await c.drain_until_closed(timeout=5)
    assert code == 1000 and c.get(None).finals == 1 and c.get(None).frames_after_final == 0


async def test_refused_contexts_never_closed_do_not_accumulate(redis_url: str) -> None:
    """Ids refused at start are remembered boundedly: the oldest are forgotten, the newest still muted."""
    async with el_stack(redis_url, compat_max_contexts_per_socket=1,
                        emu_config={"realtime_factor": 1.0}) as stack, connect(stack) as c:
        await c.send(text="Holding the only slot for a while.", context_id="live", flush=True)
        n = 600
        for i in range(n):
            await c.send(text="refused", context_id=f"r{i}")
        await c.pump_until(lambda c: sum(len(c.get(f"r{i}").errors) for i in range(n)) >= n, timeout=30)
        # The newest refused id is still remembered: its text is dropped without a second error.
        await c.send(text="more", context_id=f"r{n - 1}")
        # The oldest was forgotten (the map is bounded): its text counts as a new context, refused again.
        await c.send(text="more", context_id="r0")
        await c.pump_until(lambda c: len(c.get("r0").errors) >= 2, timeout=10)
        await c.quiet_for(0.3)
        await c.send(context_id="live", close_context=True)
        await c.pump_until(lambda c: c.final("live"), timeout=20)
    assert len(c.get(f"r{n - 1}").errors) == 1
    assert [e["error"] for e in c.get("r0").errors] == ["too_many_contexts"] * 2
    assert decode_text(c.get("live").audio, 16000) == "Holding the only slot for a while."
    assert not c.socket_errors
