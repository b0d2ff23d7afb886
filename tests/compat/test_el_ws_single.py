"""``stream-input``: BOS, text, EOS, final, close 1000, and the ways it ends badly."""

from __future__ import annotations

import time

from emulator.synth import decode_text

from tests.compat.conftest import EL_VOICE
from tests.compat.elclient import ElClient
from tests.support.timing import LOAD_MARGIN_S


def connect(stack, **query):  # type: ignore[no-untyped-def]
    query.setdefault("output_format", "pcm_16000")
    return ElClient.connect(stack.base, stack.http, multi=False, voice=EL_VOICE, **query)


async def test_sdk_sequence_ends_with_final_and_close_1000(el) -> None:
    async with connect(el, model_id="Ellipsis") as c:
        await c.send(text=" ", try_trigger_generation=True, voice_settings=None,
                     generation_config={"chunk_length_schedule": [50]})
        for chunk in ("Hello ", "from ", "the ", "SDK. "):
            await c.send(text=chunk, try_trigger_generation=True)
        await c.send(text="")
        code = await c.drain_until_closed()
    assert code == 1000
    rec = c.get(None)
    assert decode_text(rec.audio, 16000) == "Hello from the SDK. "
    assert rec.finals == 1 and rec.frames_after_final == 0
    # ElevenLabs' fields, plus the usage extension (docs/compat.md) that JSON clients ignore.
    chars = len("Hello from the SDK. ")
    usage = {"billedChars": chars, "cachedChars": 0, "synthesizedChars": chars,
             "audioSeconds": round(len(rec.audio) / 32000, 3)}
    assert c.frames[-1] == {"audio": None, "isFinal": True, "normalizedAlignment": None, "alignment": None, **usage}
    assert all("contextId" not in f for f in c.frames)
    assert not any("message" in f for f in c.frames)  # the SDK raises on a closing frame with "message"


async def test_text_may_arrive_in_the_first_message_and_flush_keeps_it_open(el) -> None:
    async with connect(el) as c:
        await c.send(text="Straight in. ", voice_settings={"stability": 0.4})
        await c.send(text=" ", flush=True)  # whitespace is forwarded, flush generates now
        await c.pump_until(lambda c: decode_text(c.get(None).audio, 16000).startswith("Straight in."), 10)
        assert c.get(None).finals == 0
        await c.send(text="Then more.")
        await c.send(text="")
        assert await c.drain_until_closed() == 1000
    assert decode_text(c.get(None).audio, 16000).replace("  ", " ") == "Straight in. Then more."


async def test_eos_as_first_message_gives_a_final_without_audio(el) -> None:
    async with connect(el) as c:
        await c.send(text="")
        assert await c.drain_until_closed() == 1000
    assert c.get(None).finals == 1 and c.get(None).audio == b""


async def test_nothing_is_accepted_after_eos(el) -> None:
    async with connect(el) as c:
        await c.send(text=" ")
        await c.send(text="Only this.")
        await c.send(text="")
        await c.send(text="Not this.")
        assert await c.drain_until_closed() == 1000
    assert decode_text(c.get(None).audio, 16000) == "Only this."


async def test_inactivity_closes_1008_with_elevenlabs_message(el) -> None:
    async with connect(el, inactivity_timeout=1) as c:
        await c.send(text=" ")
        t0 = time.monotonic()
        code = await c.drain_until_closed(timeout=10)
        waited = time.monotonic() - t0
    assert code == 1008 and 0.9 < waited < 1.0 + LOAD_MARGIN_S  # its 1 s, not the default 20 s
    err = c.socket_errors[-1]
    assert err["code"] == 1008 and err["error"] == "timeout"
    assert err["message"].startswith("Have not received a new text input within the timeout of 1 seconds.")


async def test_close_code_1008_and_error_frame_on_bad_json(el) -> None:
    async with connect(el) as c:
        await c.ws.send_str("{nope")
        assert await c.drain_until_closed() == 1008
    assert c.socket_errors[0]["error"] == "invalid_json" and c.socket_errors[0]["code"] == 1008


async def test_upstream_failure_is_an_error_frame_then_1008(el) -> None:
    assert el.emu is not None
    el.emu.set_config(reject_voice_ids=["nobody"])
    async with ElClient.connect(el.base, el.http, multi=False, voice="nobody", output_format="pcm_16000") as c:
        await c.send(text="Who am I?")
        await c.send(text="")
        assert await c.drain_until_closed(timeout=20) == 1008
    assert c.socket_errors and c.socket_errors[0]["code"] == 1008 and c.get(None).finals == 0
