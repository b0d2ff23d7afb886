"""Upstream faults through the whole stack: only the speaking context ends, with the right code; the pool heals.

(The provider-level behaviour is tested in tests/worker/test_elevenlabs_faults.py; these go through
client → gateway → Redis → worker → emulator and back, each a separate process.) Failover is off
here (``FAILOVER_MAX_PER_CONTEXT=0``): with it on, the speaking context resumes (test_failover.py).
"""

from __future__ import annotations

import contextlib
import time

import aiohttp
import pytest
from emulator.synth import decode_text

from tests.faults.support import assert_no_orphans, report, start_stack
from tests.support.procs import Procs
from tests.support.stack import NativeClient

SPEECH = "The speaking context talks long enough to meet the fault halfway through. " * 2
AFTER = 3  # audio chunks on the socket before the fault fires

FAULTS = {
    "drop_after_chunks": "upstream_disconnected",  # TCP aborted, no close frame (client sees 1006)
    "close_1008_after_chunks": "upstream_disconnected",  # ElevenLabs' generic 1008 close
    "stall_after_chunks": "upstream_timeout",  # socket stays open, nothing more arrives
    "garbage_after_chunks": "upstream_error",  # a frame that is not JSON
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_upstream_fault_ends_only_the_speaking_context_and_the_pool_heals(
        procs: Procs, redis_url: str, fault: str) -> None:
    stack = await start_stack(procs, redis_url, emulator={"realtime_factor": 4, "chunk_ms": 120},
                              UPSTREAM_FIRST_AUDIO_TIMEOUT_S=1.0, POOL_MIN_SOCKETS=1, FAILOVER_MAX_PER_CONTEXT=0)
    async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as clients:
        # Three listeners whose contexts hold buffered text but no audio yet, sharing the pooled socket.
        quiet = [await clients.enter_async_context(NativeClient.connect(stack.base, http)) for _ in range(3)]
        for i, c in enumerate(quiet):
            await c.send(type="start", context_id="q", format="pcm_16000", text=f"Quiet listener {i} ")
            await c.pump_until(lambda c: c.result("q").started is not None, 10)
        await stack.emu_config(**{fault: AFTER, "fault_sockets": 1})

        victim = await clients.enter_async_context(NativeClient.connect(stack.base, http))
        t0 = time.monotonic()
        await victim.send(type="start", context_id="v", format="pcm_16000", text=SPEECH, end=True)
        await victim.pump_until(lambda c: c.ended("v"), 20)
        failed_in = time.monotonic() - t0

        for c in quiet:  # moved to a healthy socket with their text: nothing lost, nothing said twice
            await c.send(type="text", context_id="q", text="carries on.")
            await c.send(type="end", context_id="q")
        for c in quiet:
            await c.pump_until(lambda c: c.ended("q"), 20)
        after = await victim.speak("after", "The pool healed.", format="pcm_16000", timeout=20)

    res = victim.result("v")
    assert res.error is not None and res.error["code"] == FAULTS[fault], res.events[-2:]
    assert res.final is None and 1 <= len(res.frames) <= AFTER
    assert res.seqs == list(range(len(res.frames)))
    assert SPEECH.startswith(decode_text(res.audio, 16000))
    for i, c in enumerate(quiet):
        q = c.result("q")
        assert q.final is not None, q.error
        assert decode_text(q.audio, 16000) == f"Quiet listener {i} carries on."
    assert after.final is not None and decode_text(after.audio, 16000) == "The pool healed."
    stats = await stack.emu_stats()
    assert stats["faults_fired"][fault.removesuffix("_after_chunks")] == 1
    # 3 quiet + victim on the failing socket, the 3 quiet ones re-opened elsewhere, then "after".
    assert stats["contexts_opened"] == 8, stats
    assert not victim.session_errors and all(not c.session_errors for c in quiet)
    await assert_no_orphans(redis_url)
    report("upstream_fault", fault=fault, code=res.error["code"], error_after_s=round(failed_in, 3),
           victim_chunks=len(res.frames), bystanders_moved_and_completed=len(quiet))
