"""``multi-stream-input`` message by message, against the emulator-backed stack (content decoded)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from emulator.synth import decode_text

from tests.compat.conftest import EL_VOICE, el_stack
from tests.compat.elclient import ElClient
from tests.support.timing import LOAD_MARGIN_S


def connect(stack, **query):  # type: ignore[no-untyped-def]
    query.setdefault("output_format", "pcm_16000")
    return ElClient.connect(stack.base, stack.http, voice=EL_VOICE, **query)


async def test_context_lifecycle_frames_as_clients_parse_them(el) -> None:
    async with connect(el, model_id="eleven_flash_v2_5", sync_alignment=True) as c:
        await c.send(text=" ", context_id="a", voice_settings={"stability": 0.5, "similarity_boost": 0.8})
        await c.send(text="Hello there. ", context_id="a", flush=True)
        await c.send(text="And more words.", context_id="a")
        await c.send(context_id="a", close_context=True)
        await c.pump_until(lambda c: c.final("a"))
        await c.quiet_for(0.3)
    a = c.get("a")
    assert decode_text(a.audio, 16000) == "Hello there. And more words."
    assert a.finals == 1 and a.frames_after_final == 0 and not a.errors
    audio_frames = [f for f in c.frames if f.get("audio")]
    for f in audio_frames:
        assert f["contextId"] == "a" and f["isFinal"] is None
        assert set(f) == {"audio", "isFinal", "normalizedAlignment", "alignment", "contextId"}
    # ElevenLabs' fields, plus the usage extension (docs/compat.md) that JSON clients ignore.
    usage = {"billedChars": 28, "cachedChars": 0, "synthesizedChars": 28, "audioSeconds": c.frames[-1]["audioSeconds"]}
    assert c.frames[-1] == {"audio": None, "isFinal": True, "normalizedAlignment": None, "alignment": None,
                            "contextId": "a", **usage}
    # sync_alignment: every character, in order, with start/duration arrays of the same length
    assert a.chars == "Hello there. And more words."
    for al in a.alignments:
        assert al is not None and len(al["chars"]) == len(al["charStartTimesMs"]) == len(al["charDurationsMs"])


async def test_keepalives_never_create_contexts(el) -> None:
    async with connect(el) as c:
        await c.send(text="")  # pipecat's id-less keep-alive
        await c.send(text="", context_id="ghost")  # a keep-alive racing its context's init
        await c.send(text=" ", context_id="ghost", voice_settings={"speed": 1.1})  # the init: settings accepted
        await c.send(text="Still fine.", context_id="ghost")
        await c.send(text="", context_id="ghost")  # keep-alive of a live context
        await c.send(context_id="ghost", close_context=True)
        await c.pump_until(lambda c: c.final("ghost"))
        await c.quiet_for(0.3)
    assert decode_text(c.get("ghost").audio, 16000) == "Still fine."
    assert c.get("ghost").finals == 1
    assert not c.socket_errors and None not in c.ctx


async def test_voice_settings_null_and_empty_mean_defaults_and_later_changes_are_ignored(el) -> None:
    async with connect(el) as c:
        await c.send(text=" ", context_id="n", voice_settings=None)
        await c.send(text=" ", context_id="e", voice_settings={})
        await c.send(text="one", context_id="n", voice_settings={"stability": 0.1})
        await c.send(text="two", context_id="e", voice_settings=None)
        for cid in ("n", "e"):
            await c.send(context_id=cid, close_context=True)
        await c.pump_until(lambda c: c.final("n") and c.final("e"))
    assert decode_text(c.get("n").audio, 16000) == "one"
    assert decode_text(c.get("e").audio, 16000) == "two"
    assert not c.get("n").errors and not c.get("e").errors and not c.socket_errors


@pytest.mark.parametrize("key", ["generation_config", "generator_config"])
async def test_chunk_length_schedule_in_either_spelling(el, key: str) -> None:
    async with connect(el) as c:
        await c.send(text=" ", context_id="g", **{key: {"chunk_length_schedule": [50, 120, 160]}})
        await c.send(text="Scheduled text arrives here.", context_id="g", try_trigger_generation=True)
        await c.send(context_id="g", close_context=True)
        await c.pump_until(lambda c: c.final("g"))
    assert decode_text(c.get("g").audio, 16000) == "Scheduled text arrives here."


async def test_invalid_schedule_is_an_error_frame_then_1008(el) -> None:
    async with connect(el) as c:
        await c.send(text=" ", context_id="g", generation_config={"chunk_length_schedule": [5]})
        code = await c.drain_until_closed()
    assert code == 1008
    assert c.socket_errors and c.socket_errors[0]["error"] == "invalid_message"
    assert c.socket_errors[0]["code"] == 1008 and "chunk_length_schedule" in c.socket_errors[0]["message"]


async def test_flush_generates_without_final_and_the_context_goes_on(el) -> None:
    async with connect(el) as c:
        await c.send(text=" ", context_id="f")
        await c.send(text="First part.", context_id="f")
        await c.send(context_id="f", flush=True)  # pipecat's bare flush, no text
        await c.pump_until(lambda c: decode_text(c.get("f").audio, 16000) == "First part.", timeout=10)
        await c.quiet_for(0.3)
        assert c.get("f").finals == 0
        await c.send(text=" Second part.", context_id="f", flush=True)
        await c.send(text="", context_id="f", flush=True)  # LiveKit's end of input
        await c.send(context_id="f", close_context=True)
        await c.pump_until(lambda c: c.final("f"))
    assert decode_text(c.get("f").audio, 16000) == "First part. Second part."


async def test_every_closed_context_gets_exactly_one_final(el) -> None:
    async with connect(el) as c:
        await c.send(context_id="never-opened", close_context=True)
        await c.send(text=" ", context_id="empty", voice_settings={})  # LiveKit with empty input
        await c.send(text="", context_id="empty", flush=True)
        await c.send(context_id="empty", close_context=True)
        await c.pump_until(lambda c: c.final("never-opened") and c.final("empty"))
        await c.send(context_id="empty", close_context=True)  # a second close changes nothing
        await c.quiet_for(0.4)
    assert c.get("never-opened").finals == 1 and c.get("empty").finals == 1
    assert c.get("empty").audio == b""


async def test_close_socket_finishes_every_context_then_closes_1000(el) -> None:
    async with connect(el) as c:
        for cid in ("x", "y", "z"):
            await c.send(text=" ", context_id=cid)
            await c.send(text=f"Context {cid} speaks.", context_id=cid)
        await c.send(close_socket=True)
        code = await c.drain_until_closed()
    assert code == 1000
    for cid in ("x", "y", "z"):
        assert c.get(cid).finals == 1
        assert decode_text(c.get(cid).audio, 16000) == f"Context {cid} speaks."


async def test_more_than_five_concurrent_contexts_on_one_socket(el) -> None:
    texts = {f"c{i}": f"Context number {i} is here." for i in range(12)}
    async with connect(el) as c:
        for cid in texts:
            await c.send(text=" ", context_id=cid)
        for cid, text in texts.items():
            await c.send(text=text, context_id=cid, flush=True)
        for cid in texts:
            await c.send(context_id=cid, close_context=True)
        await c.pump_until(lambda c: all(c.final(cid) for cid in texts))
    for cid, text in texts.items():
        assert not c.get(cid).errors, c.get(cid).errors
        assert decode_text(c.get(cid).audio, 16000) == text
    assert not c.socket_errors and c.close_code is None
    assert el.emu is not None
    assert el.emu.stats.max_active_contexts_per_socket <= 5 and el.emu.stats.context_cap_rejections == 0


async def test_beyond_the_per_socket_limit_only_that_context_fails(redis_url: str) -> None:
    async with el_stack(redis_url, compat_max_contexts_per_socket=3) as stack, connect(stack) as c:
        for cid in ("a", "b", "c", "d"):
            await c.send(text=" ", context_id=cid)
            await c.send(text=f"Speaker {cid}.", context_id=cid)
        await c.send(text="more text for the rejected one", context_id="d")  # dropped, no second error
        for cid in ("a", "b", "c", "d"):
            await c.send(context_id=cid, close_context=True)
        await c.pump_until(lambda c: all(c.final(cid) for cid in "abcd"))
        # the socket is alive and a slot is free again
        await c.send(text="Next turn.", context_id="e", flush=True)
        await c.send(context_id="e", close_context=True)
        await c.pump_until(lambda c: c.final("e"))
    d = c.get("d")
    assert len(d.errors) == 1 and d.errors[0]["error"] == "too_many_contexts" and d.errors[0]["contextId"] == "d"
    assert d.audio == b"" and d.finals == 1
    for cid in "abc":
        assert decode_text(c.get(cid).audio, 16000) == f"Speaker {cid}."
    assert decode_text(c.get("e").audio, 16000) == "Next turn."
    assert not c.socket_errors


def _split(chunks: list[bytes], old: str, new: str) -> bool:
    """Some prefix of the chunks is a prefix of ``old``'s audio and the rest is exactly ``new``."""
    for k in range(len(chunks) + 1):
        head, tail = b"".join(chunks[:k]), b"".join(chunks[k:])
        if decode_text(tail, 16000) == new and old.startswith(decode_text(head, 16000)):
            return True
    return False


async def test_barge_in_storm_never_mixes_audio_between_context_ids(redis_url: str) -> None:
    # Slow, chunked upstream so that turns are really interrupted mid-stream.
    async with el_stack(redis_url, emu_config={"realtime_factor": 4.0, "chunk_ms": 120}) as stack, \
            connect(stack) as c:
        turns = [f"t{i}" for i in range(10)]
        texts = {cid: f"Turn {cid} says something long enough to be cut." for cid in turns}
        overlap = 0
        for i, cid in enumerate(turns):
            overlap = max(overlap, sum(1 for t in turns[:i] if not c.final(t)))
            await c.send(text=" ", context_id=cid, voice_settings={})
            await c.send(text=texts[cid], context_id=cid, flush=True)
            await c.pump_until(lambda c, cid=cid: bool(c.get(cid).chunks), timeout=10)
            await c.send(context_id=cid, close_context=True)  # barge-in: the client moves on at once
            if i % 3 == 2:  # and sometimes reuses an id whose last turn is still draining
                await c.send(text=" ", context_id="reused")
                await c.send(text=f"Reuse {i}.", context_id="reused", flush=True)
        await c.send(context_id="reused", close_context=True)
        await c.pump_until(lambda c: all(c.final(t) for t in turns) and c.final("reused"), timeout=60)
        await c.quiet_for(0.3)
    assert overlap > 5, overlap  # more contexts in flight on this one socket than ElevenLabs allows
    for cid in turns:
        rec = c.get(cid)
        assert rec.finals == 1 and rec.frames_after_final == 0 and not rec.errors
        assert decode_text(rec.audio, 16000) == texts[cid]  # close_context is graceful: all of it, only it
    # the reused id: earlier incarnations were cut when it was reused; the last one is whole
    reused = c.get("reused")
    assert reused.finals == 1
    assert _split(reused.chunks, "Reuse 5.Reuse 2.", "Reuse 8.") or \
        decode_text(reused.audio, 16000).endswith("Reuse 8.")
    assert not c.socket_errors


async def test_reusing_a_draining_id_cuts_the_old_incarnation(redis_url: str) -> None:
    async with el_stack(redis_url, emu_config={"realtime_factor": 2.0, "chunk_ms": 100}) as stack, \
            connect(stack) as c:
        old = "This old turn is long and will never finish playing out."
        await c.send(text=old, context_id="a", flush=True)
        await c.pump_until(lambda c: len(c.get("a").chunks) >= 2, timeout=10)
        await c.send(context_id="a", close_context=True)
        await c.send(text=" ", context_id="a")
        await c.send(text="New turn.", context_id="a", flush=True)
        await c.send(context_id="a", close_context=True)
        await c.pump_until(lambda c: c.final("a"), timeout=20)
        await c.quiet_for(0.5)
    rec = c.get("a")
    assert rec.finals == 1 and rec.frames_after_final == 0
    assert _split(rec.chunks, old, "New turn.")
    assert len(decode_text(rec.audio, 16000)) < len(old) + len("New turn.")  # the old one was cut


async def test_inactive_context_is_ended_and_idle_socket_closed(redis_url: str) -> None:
    async with el_stack(redis_url) as stack, connect(stack, inactivity_timeout=1) as c:
        await c.send(text=" ", context_id="idle")
        await c.send(text="Buffered but never flushed", context_id="idle")
        t0 = time.monotonic()
        await c.pump_until(lambda c: c.final("idle"), timeout=10)
        ended_after = time.monotonic() - t0
        code = await c.drain_until_closed(timeout=10)
        closed_after = time.monotonic() - t0
    assert decode_text(c.get("idle").audio, 16000) == "Buffered but never flushed"
    assert 0.9 < ended_after < 1.0 + LOAD_MARGIN_S  # its 1 s, not the default 20 s
    assert code == 1008 and closed_after >= max(1.0, ended_after)
    assert c.socket_errors[-1]["message"].startswith("Have not received a new text input within the timeout of 1")


async def test_unknown_model_ids_are_lenient(el) -> None:
    async with connect(el, model_id="Ellipsis") as c:
        await c.send(text="Model ids are lenient.", context_id="m", flush=True)
        await c.send(context_id="m", close_context=True)
        await c.pump_until(lambda c: c.final("m"))
    assert decode_text(c.get("m").audio, 16000) == "Model ids are lenient."


@pytest.mark.parametrize(("send", "code", "error"), [
    ("not json", 1008, "invalid_json"),
    ('["a list"]', 1008, "invalid_json"),
    ('{"text": 5}', 1008, "invalid_message"),
    ('{"text": "x", "flush": "yes"}', 1008, "invalid_message"),
])
async def test_malformed_messages_close_with_an_error_frame(el, send: str, code: int, error: str) -> None:
    async with connect(el) as c:
        await c.ws.send_str(send)
        got = await c.drain_until_closed()
    assert got == code
    assert c.socket_errors == [{"message": c.socket_errors[0]["message"], "error": error, "code": code}]


async def test_binary_frames_and_bad_query_close_the_socket(el) -> None:
    async with connect(el) as c:
        await c.ws.send_bytes(b"\x00\x01")
        assert await c.drain_until_closed() == 1008
    assert c.socket_errors[0]["error"] == "binary_not_accepted"
    async with connect(el, output_format="opus_48000_48") as c:
        assert await c.drain_until_closed() == 1008
    assert c.socket_errors[0]["error"] == "unsupported_format"
    async with connect(el, sync_alignment="maybe") as c:
        assert await c.drain_until_closed() == 1008
    assert c.socket_errors[0]["error"] == "invalid_request"


async def test_unknown_voice_fails_that_context_not_the_socket(redis_url: str) -> None:
    async with el_stack(redis_url) as stack:
        # The ElevenLabs provider takes any id upstream; the emulator refuses this one.
        assert stack.emu is not None
        stack.emu.set_config(reject_voice_ids=["nobody"])
        async with ElClient.connect(stack.base, stack.http, voice="nobody", output_format="pcm_16000") as c:
            await c.send(text="Who am I?", context_id="v", flush=True)
            await c.send(context_id="v", close_context=True)
            await c.pump_until(lambda c: c.final("v"), timeout=20)
    rec = c.get("v")
    assert rec.errors and rec.errors[0]["contextId"] == "v" and rec.finals == 1 and rec.audio == b""


async def test_many_sockets_at_once(el) -> None:
    async def one(i: int) -> str:
        async with connect(el) as c:
            await c.send(text=f"Socket {i} talks.", context_id="only", flush=True)
            await c.send(context_id="only", close_context=True)
            await c.pump_until(lambda c: c.final("only"))
        return decode_text(c.get("only").audio, 16000)

    got = await asyncio.gather(*(one(i) for i in range(20)))
    assert got == [f"Socket {i} talks." for i in range(20)]


async def test_sixty_turn_conversation_with_random_overlap_and_reuse(redis_url: str) -> None:
    rng = random.Random(7)
    async with el_stack(redis_url, emu_config={"realtime_factor": 8.0, "chunk_ms": 120}) as stack, \
            connect(stack) as c:
        texts: dict[str, str] = {}
        open_ids: list[str] = []
        for turn in range(60):
            cid = f"t{turn}" if rng.random() < 0.8 else f"r{rng.randrange(3)}"  # some ids come back
            if cid in open_ids:
                continue
            texts[cid] = f"Turn {turn} for {cid}."
            await c.send(text=" ", context_id=cid, voice_settings={})
            await c.send(text=texts[cid], context_id=cid, flush=rng.random() < 0.7)
            open_ids.append(cid)
            if rng.random() < 0.3:
                await c.send(text="", context_id=cid)  # keep-alive
            while len(open_ids) > rng.randrange(2, 9):  # close some, anywhere from at once to much later
                victim = open_ids.pop(rng.randrange(len(open_ids)))
                await c.send(context_id=victim, close_context=True)
                await c.pump_until(lambda c, v=victim: c.final(v), timeout=20)
                rec = c.get(victim)
                assert decode_text(rec.audio, 16000) == texts[victim], (victim, texts[victim])
                c.ctx.pop(victim)  # the id may come back as a new context
        for cid in open_ids:
            await c.send(context_id=cid, close_context=True)
        await c.pump_until(lambda c: all(c.final(cid) for cid in open_ids), timeout=30)
        for cid in open_ids:
            assert decode_text(c.get(cid).audio, 16000) == texts[cid]
        assert not c.socket_errors and all(not r.errors for r in c.ctx.values())
