"""multi-stream-input over a real socket: contexts, finals, the 5-context cap, voice settings, timeouts."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
from emulator.protocol import VOICE_SETTINGS_MESSAGE, max_contexts_message
from emulator.runner import RunningEmulator
from emulator.synth import decode_text

from tests.emulator.wsclient import Received, read
from tests.support.timing import LOAD_MARGIN_S

PCM = {"output_format": "pcm_16000"}


async def test_happy_path_audio_decodes_to_its_text(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await ws.send_json({"text": " ", "context_id": "c1", "voice_settings": {"stability": 0.4}})
        await ws.send_json({"text": "Hello there, ", "context_id": "c1"})
        await ws.send_json({"text": "general Kenobi.", "context_id": "c1"})
        await ws.send_json({"context_id": "c1", "flush": True})
        await ws.send_json({"context_id": "c1", "close_context": True})
        got = await read(ws, finals={"c1"})
    assert decode_text(got.audio("c1"), 16000) == "Hello there, general Kenobi."
    assert got.finals() == ["c1"]
    assert all(f["contextId"] == "c1" for f in got.frames)
    assert got.frames[-1] == {
        "audio": None,
        "isFinal": True,
        "normalizedAlignment": None,
        "alignment": None,
        "contextId": "c1",
    }
    for frame in got.audio_frames():
        assert frame["isFinal"] is None
        assert set(frame) == {"audio", "isFinal", "normalizedAlignment", "alignment", "contextId"}
    assert emu.stats.messages_received["init"] == 1
    assert emu.stats.characters_synthesized == len("Hello there, general Kenobi.")


async def test_bare_flush_gives_audio_but_no_final(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await ws.send_json({"text": " ", "context_id": "c1"})
        await ws.send_json({"text": "Flushed but open", "context_id": "c1", "flush": True})
        got = await read(ws, timeout=0.5)
        assert decode_text(got.audio("c1"), 16000) == "Flushed but open"
        assert got.finals() == [] and not got.closed
        assert emu.stats.contexts_active == 1


async def test_alignment_keys_and_durations_add_up(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    text = "Alignment covers every character of this sentence."
    async with http.ws_connect(emu.multi_stream_url(sync_alignment=True, output_format="pcm_24000")) as ws:
        await ws.send_json({"text": text, "context_id": "a", "flush": True})
        await ws.send_json({"context_id": "a", "close_context": True})
        got = await read(ws, finals={"a"})
    frames = got.audio_frames("a")
    assert len(frames) > 1  # several chunks, each with its own relative timing
    chars: list[str] = []
    for frame in frames:
        for key in ("alignment", "normalizedAlignment"):
            al = frame[key]
            assert set(al) == {"chars", "charStartTimesMs", "charDurationsMs"}
            assert len(al["chars"]) == len(al["charStartTimesMs"]) == len(al["charDurationsMs"])
        al = frame["alignment"]
        assert al["charStartTimesMs"][0] == 0  # relative to the chunk
        audio_ms = len(base64.b64decode(frame["audio"])) / 2 / 24000 * 1000
        assert abs(sum(al["charDurationsMs"]) - audio_ms) <= 1
        assert al["charStartTimesMs"][-1] + al["charDurationsMs"][-1] == sum(al["charDurationsMs"])
        chars += al["chars"]
    assert "".join(chars) == text


async def test_without_sync_alignment_first_chunk_carries_the_generation(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    text = "Only the first chunk of a generation has timing."
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await ws.send_json({"text": text, "context_id": "a", "close_context": True})
        got = await read(ws, finals={"a"})
    frames = got.audio_frames("a")
    assert "".join(frames[0]["alignment"]["chars"]) == text
    assert all(f["alignment"] is None for f in frames[1:])


async def test_sixth_context_closes_the_whole_socket(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        for i in range(5):
            await ws.send_json({"text": " ", "context_id": f"c{i}"})
        await ws.send_json({"text": " ", "context_id": "c5"})
        got = await read(ws)
    assert got.closed and got.close_code == 1008
    assert got.errors() == [
        {"message": max_contexts_message(5), "error": "max_active_conversations", "code": 1008}
    ]
    assert emu.stats.context_cap_rejections == 1
    assert emu.stats.max_active_contexts_per_socket == 5
    await emu.wait_until(lambda s: s.contexts_active == 0 and s.ws_connections_active == 0)


async def test_slot_is_freed_only_by_the_final(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        for i in range(5):
            await ws.send_json({"text": " ", "context_id": f"c{i}"})
        await ws.send_json({"text": "bye", "context_id": "c0", "close_context": True})
        got = await read(ws, finals={"c0"})
        assert got.finals() == ["c0"]
        await ws.send_json({"text": "fresh ", "context_id": "c5", "flush": True})
        got = await read(ws, timeout=0.5)
        assert not got.closed and got.errors() == []
        assert decode_text(got.audio("c5"), 16000) == "fresh "
    assert emu.stats.max_active_contexts_per_socket == 5


async def test_custom_context_cap(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(max_contexts_per_socket=2)
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        for i in range(3):
            await ws.send_json({"text": " ", "context_id": f"c{i}"})
        got = await read(ws)
    assert got.close_code == 1008 and got.errors()[0]["error"] == "max_active_conversations"


async def test_context_id_can_be_reused_after_its_final(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await ws.send_json({"text": "one", "context_id": "c", "close_context": True})
        await read(ws, finals={"c"})
        await ws.send_json({"text": "two", "context_id": "c", "close_context": True})
        got = await read(ws, finals={"c"})
    assert decode_text(got.audio("c"), 16000) == "two"
    assert emu.stats.contexts_opened == 2


async def test_changed_voice_settings_close_1008(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await ws.send_json({"text": " ", "context_id": "c1", "voice_settings": {"stability": 0.3}})
        # An identical repeat (unset fields as null) is accepted.
        await ws.send_json(
            {"text": "ok ", "context_id": "c1", "voice_settings": {"stability": 0.3, "speed": None}}
        )
        await ws.send_json({"text": "no ", "context_id": "c1", "voice_settings": {"stability": 0.9}})
        got = await read(ws)
    assert got.close_code == 1008
    assert got.errors()[0]["message"] == VOICE_SETTINGS_MESSAGE


async def test_keep_alive_creates_a_context_that_fixes_voice_settings(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    # pipecat #4520: a keep-alive reaching an unknown id creates it; the later init's settings then differ.
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await ws.send_json({"text": "", "context_id": "turn2"})
        await emu.wait_until(lambda s: s.contexts_active == 1)
        assert emu.stats.contexts_opened == 1
        await ws.send_json({"text": " ", "context_id": "turn2", "voice_settings": {"stability": 0.2}})
        got = await read(ws)
    assert got.close_code == 1008 and got.errors()[0]["message"] == VOICE_SETTINGS_MESSAGE


async def test_implicit_contexts_count_toward_the_cap(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        for i in range(5):
            await ws.send_json({"context_id": f"k{i}", "flush": True})
        await ws.send_json({"text": "", "context_id": "k5"})
        got = await read(ws)
    assert got.close_code == 1008 and got.errors()[0]["error"] == "max_active_conversations"


async def test_messages_without_context_id_use_a_default_context(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await ws.send_json({"text": ""})  # connection keep-alive: creates nothing
        await asyncio.sleep(0.05)
        assert emu.stats.contexts_opened == 0
        await ws.send_json({"text": "default voice", "flush": True})
        await ws.send_json({"close_context": True})
        got = await read(ws, finals={"default"})
    assert decode_text(got.audio("default"), 16000) == "default voice"


async def test_per_context_inactivity_timeout(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(inactivity_timeout=0.3, **PCM)) as ws:
        await ws.send_json({"text": " ", "context_id": "idle"})
        await ws.send_json({"text": " ", "context_id": "busy"})
        loop = asyncio.get_running_loop()
        start = loop.time()
        got = Received()
        while loop.time() - start < 0.3 + LOAD_MARGIN_S:  # "busy" is kept alive; "idle" is not, and it alone ends the socket
            await ws.send_json({"text": "", "context_id": "busy"})
            await read(ws, got, timeout=0.1)
            if got.closed:
                break
        elapsed = loop.time() - start
    assert got.closed and got.close_code == 1008
    assert 0.25 < elapsed < 0.3 + LOAD_MARGIN_S
    assert got.errors()[0]["message"].startswith(
        "Have not received a new text input within the timeout of 0.3 seconds."
    )
    assert got.close_reason and got.close_reason.startswith("Have not received a new text input")


async def test_keep_alive_prevents_the_timeout(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(inactivity_timeout=0.3, **PCM)) as ws:
        await ws.send_json({"text": " ", "context_id": "c1"})
        for _ in range(8):
            await asyncio.sleep(0.1)
            await ws.send_json({"text": "", "context_id": "c1"})
        got = await read(ws, timeout=0.05)
        assert not got.closed
        await ws.send_json({"text": "still here", "context_id": "c1", "close_context": True})
        got = await read(ws, finals={"c1"})
    assert decode_text(got.audio("c1"), 16000) == "still here"


async def test_idle_socket_without_contexts_times_out(
    emu: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emu.set_config(inactivity_timeout_default=0.2)
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        got = await read(ws, timeout=1.0)
    assert got.close_code == 1008


async def test_close_socket_sends_finals_then_1000(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await ws.send_json({"text": "first ", "context_id": "a"})
        await ws.send_json({"text": "second ", "context_id": "b", "flush": True})
        await ws.send_json({"close_socket": True})
        got = await read(ws)
    assert got.closed and got.close_code == 1000
    assert sorted(f for f in got.finals() if f) == ["a", "b"]
    assert decode_text(got.audio("a"), 16000) == "first "  # unflushed text is voiced on close
    assert decode_text(got.audio("b"), 16000) == "second "
    last_audio = max(i for i, f in enumerate(got.frames) if f.get("audio"))
    assert all(f.get("isFinal") for f in got.frames[last_audio + 1 :])


async def test_schedule_buffers_until_threshold(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await ws.send_json(
            {"text": " ", "context_id": "s", "generation_config": {"chunk_length_schedule": [60]}}
        )
        await ws.send_json({"text": "under sixty characters ", "context_id": "s"})
        got = await read(ws, timeout=0.3)
        assert got.audio_frames() == []
        await ws.send_json({"text": "and now well past the sixty character threshold ", "context_id": "s"})
        got = await read(ws, timeout=0.5)
        voiced = decode_text(got.audio("s"), 16000)
        assert voiced.startswith("under sixty characters and now")
        await ws.send_json({"text": "tail", "context_id": "s", "flush": True})
        got = await read(ws, timeout=0.5)
        assert decode_text(got.audio("s"), 16000).endswith("tail")


async def test_auto_mode_voices_each_message(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(auto_mode=True, **PCM)) as ws:
        await ws.send_json({"text": "Short.", "context_id": "s"})
        got = await read(ws, timeout=0.5)
    assert decode_text(got.audio("s"), 16000) == "Short."


async def test_contexts_are_independent(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    emu.set_config(realtime_factor=20)
    texts = {f"ctx{i}": f"context number {i} says hi" for i in range(5)}
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        for cid, text in texts.items():
            await ws.send_json({"text": text, "context_id": cid, "close_context": True})
        got = await read(ws, finals=set(texts))
    for cid, text in texts.items():
        assert decode_text(got.audio(cid), 16000) == text


async def test_malformed_json_closes_1008(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(**PCM)) as ws:
        await ws.send_str("{not json")
        got = await read(ws)
    assert got.close_code == 1008 and got.errors()[0]["error"] == "invalid_input_message"


async def test_unsupported_format_closes_1008(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(output_format="opus_48000_64")) as ws:
        got = await read(ws)
    assert got.close_code == 1008 and got.errors()[0]["error"] == "unsupported_output_format"


async def test_timeout_over_180_rejected(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(emu.multi_stream_url(inactivity_timeout=300)) as ws:
        got = await read(ws)
    assert got.close_code == 1008


async def test_ulaw_and_mp3_output(emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
    from shared.audio import ulaw_decode
    from shared.audio.mp3frames import parse_frame_header

    async with http.ws_connect(emu.multi_stream_url(output_format="ulaw_8000")) as ws:
        await ws.send_json({"text": "telephony", "context_id": "u", "close_context": True})
        got = await read(ws, finals={"u"})
    assert decode_text(ulaw_decode(got.audio("u")), 8000) == "telephony"
    async with http.ws_connect(emu.multi_stream_url()) as ws:  # default: mp3_44100_128
        await ws.send_json({"text": "compressed", "context_id": "m", "close_context": True})
        got = await read(ws, finals={"m"})
    for frame in got.audio_frames("m"):
        assert parse_frame_header(base64.b64decode(frame["audio"])) is not None
