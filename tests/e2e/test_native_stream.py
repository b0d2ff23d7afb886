"""Native protocol behaviour over the whole stack with the local voice: streaming, barge-in, cleanup."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from gateway.dispatch import INPUT_TTL_S

from shared import keys
from shared.audio.analysis import rms
from tests.support.scrape import metric
from tests.support.stack import NativeClient


async def test_token_streamed_context_arrives_complete_and_in_order(local_stack) -> None:
    base, http = local_stack
    text = "Streaming text arrives a few words at a time. The gateway keeps it in order. Then it ends."
    async with NativeClient.connect(base, http) as client:
        await client.send(type="start", context_id="s1", format="pcm_16000")
        for word in text.split(" "):
            await client.send(type="text", context_id="s1", text=word + " ")
            await asyncio.sleep(0.01)
        await client.send(type="end", context_id="s1")
        await client.pump_until(lambda c: c.ended("s1"), 60)
    res = client.result("s1")
    assert res.error is None and res.final is not None and res.final["reason"] == "completed"
    assert res.seqs == list(range(len(res.frames)))
    assert res.final["chunks"] == len(res.frames)
    assert res.final["characters"] == len(text) + 1
    seconds = len(res.audio) / 32000
    assert 3.0 < seconds < 15.0, seconds
    assert rms(res.audio) > 0.01


async def test_a_running_streamed_jobs_input_list_carries_a_ttl(local_stack, redis_url: str) -> None:
    """The list bounds a leak if the worker dies mid-stream, though EXPIRE is no longer sent per token."""
    base, http = local_stack
    tokens = 300
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with NativeClient.connect(base, http) as client:
            await client.send(type="start", context_id="t", format="pcm_16000", text="Counting out loud: ")
            await client.pump_until(lambda c: c.result("t").started is not None, 10)
            started = client.result("t").started
            assert started is not None
            listed = keys.input_list(started["job_id"])
            for i in range(tokens):
                await client.send(type="text", context_id="t", text=f"{i} ")
            async with asyncio.timeout(10):
                while await r.llen(listed) < tokens:  # type: ignore[misc]
                    await asyncio.sleep(0.02)
            assert not client.ended("t")
            assert 0 < await r.ttl(listed) <= INPUT_TTL_S
            await client.send(type="cancel", context_id="t")
            await client.pump_until(lambda c: c.ended("t"), 30)
    finally:
        await r.aclose()


async def test_first_audio_arrives_before_input_ends(local_stack) -> None:
    base, http = local_stack
    async with NativeClient.connect(base, http) as client:
        await client.send(type="start", context_id="e1", format="pcm_16000",
                          text="The first sentence is complete. ")
        await client.pump_until(lambda c: bool(c.result("e1").frames), 30)
        assert not client.ended("e1")
        await client.send(type="text", context_id="e1", text="And a second one follows.")
        await client.send(type="end", context_id="e1")
        await client.pump_until(lambda c: c.ended("e1"), 30)
    assert client.result("e1").final is not None


async def test_cancel_stops_audio_and_next_context_is_clean(local_stack) -> None:
    base, http = local_stack
    long_text = " ".join(["This is a long utterance that will be interrupted by the listener."] * 8)
    async with NativeClient.connect(base, http) as client:
        await client.send(type="start", context_id="a", format="pcm_16000", text=long_text, end=True)
        await client.pump_until(lambda c: len(c.result("a").frames) >= 2, 30)
        await client.send(type="cancel", context_id="a")
        await client.send(type="start", context_id="b", format="pcm_16000", text="Fresh start.", end=True)
        await client.pump_until(lambda c: c.ended("a") and c.ended("b"), 30)
        # Nothing of "a" may arrive after its cancelled final.
        await asyncio.sleep(0.5)
        while True:
            try:
                msg = await client.ws.receive(timeout=0.2)
            except TimeoutError:
                break
            client.handle(msg)
    a, b = client.result("a"), client.result("b")
    assert a.final is not None and a.final["reason"] == "cancelled"
    frames_at_final = a.final["chunks"]
    assert len(a.frames) == frames_at_final, "audio of a cancelled context leaked after its final"
    a_final_index = a.events.index(a.final)
    assert all(e is not a.final for e in a.events[a_final_index + 1:])
    assert b.final is not None and b.final["reason"] == "completed"
    assert b.seqs == list(range(len(b.frames)))
    assert 0.3 < len(b.audio) / 32000 < 4


async def test_several_contexts_one_after_another(local_stack) -> None:
    base, http = local_stack
    async with NativeClient.connect(base, http) as client:
        for i in range(3):
            res = await client.speak(f"k{i}", f"Sentence number {i + 1}.", format="pcm_16000", timeout=30)
            assert res.final is not None and res.final["reason"] == "completed"
        # A finished context's id may be reused for a new one.
        res2 = await client.speak("k0", "Again.", format="pcm_16000", timeout=30)
        assert res2.final is not None


async def test_disconnect_cancels_contexts_and_counts_return_to_zero(local_stack, local_worker: str,
                                                                     redis_url: str) -> None:
    base, http = local_stack
    long_text = " ".join(["A client that hangs up mid-sentence must not keep a worker busy."] * 10)
    before = await metric(http, base, "tts_active_contexts")
    async with NativeClient.connect(base, http) as client:
        await client.send(type="start", context_id="x", format="pcm_16000", text=long_text, end=True)
        await client.pump_until(lambda c: len(c.result("x").frames) >= 1, 30)
    # The worker's job ends (its input got a Cancel), so no live job and no input list remains.
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(10):
            while True:
                left = [k async for k in r.scan_iter(match=keys.PREFIX + "input:*")]
                # The gateway's gauge from its /metrics, the worker's from the worker's own port.
                if (not left and await metric(http, base, "tts_active_contexts") == before
                        and await metric(http, local_worker, "tts_worker_active_jobs") == 0):
                    break
                await asyncio.sleep(0.05)
    finally:
        await r.aclose()
