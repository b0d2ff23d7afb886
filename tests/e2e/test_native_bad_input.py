"""Bad client input gets a typed error event and the right close code; other sessions carry on."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.support.stack import NativeClient

FATAL_CASES = [
    ("not json at all", "invalid_json", 1007),
    ("[1, 2, 3]", "invalid_json", 1007),
    (json.dumps({"type": "sing"}), "invalid_message", 1008),
    (json.dumps({"context_id": "c1"}), "invalid_message", 1008),
    (json.dumps({"type": "start"}), "invalid_message", 1008),
    (json.dumps({"type": "start", "context_id": 5}), "invalid_message", 1008),
    (json.dumps({"type": "start", "context_id": "c1", "text": ["a"]}), "invalid_message", 1008),
    (json.dumps({"type": "start", "context_id": "c1", "end": "yes"}), "invalid_message", 1008),
    (json.dumps({"type": "text", "context_id": "c1"}), "invalid_message", 1008),
    (json.dumps({"type": "start", "context_id": "bad id with spaces"}), "invalid_message", 1008),
]


async def _expect_close(client: NativeClient, code: str, close_code: int) -> None:
    err = await client.ws.receive_json(timeout=5)
    assert err["type"] == "error" and err["code"] == code, err
    assert err["message"]
    msg = await client.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert client.ws.close_code == close_code


@pytest.mark.parametrize(("raw", "code", "close_code"), FATAL_CASES)
async def test_malformed_messages_close_with_typed_error(local_stack, raw: str, code: str,
                                                         close_code: int) -> None:
    base, http = local_stack
    async with NativeClient.connect(base, http) as client:
        await client.ws.send_str(raw)
        await _expect_close(client, code, close_code)


async def test_binary_frame_from_client_is_refused(local_stack) -> None:
    base, http = local_stack
    async with NativeClient.connect(base, http) as client:
        await client.ws.send_bytes(b"\x00\x01audio?")
        await _expect_close(client, "binary_not_accepted", 1003)


async def test_oversized_message_is_refused(local_stack) -> None:
    base, http = local_stack
    async with NativeClient.connect(base, http) as client:
        await client.send(type="start", context_id="c1", text="a" * 70_000)
        await _expect_close(client, "message_too_large", 1009)


async def test_context_errors_keep_the_session_open(local_stack) -> None:
    base, http = local_stack
    async with NativeClient.connect(base, http) as client:
        await client.send(type="text", context_id="nope", text="hello")
        err = await client.ws.receive_json(timeout=5)
        assert (err["type"], err["code"], err["context_id"]) == ("error", "unknown_context", "nope")
        await client.send(type="start", context_id="c1", format="pcm_9999", text="hi", end=True)
        err = await client.ws.receive_json(timeout=5)
        assert err["code"] == "unsupported_format" and err["context_id"] == "c1"
        await client.send(type="start", context_id="c1", voice="no-such-voice", text="hi", end=True)
        err = await client.ws.receive_json(timeout=5)
        assert err["code"] == "unknown_voice"
        # The session still works.
        res = await client.speak("c2", "Still here.", format="pcm_16000", timeout=30)
        assert res.final is not None and res.final["reason"] == "completed", res.events
        # Text after the context ended is refused by name.
        await client.send(type="text", context_id="c2", text="more")
        err = await client.ws.receive_json(timeout=5)
        assert err["code"] == "context_closed"


async def test_bad_sessions_do_not_disturb_a_good_one(local_stack) -> None:
    base, http = local_stack

    async def misbehave(i: int) -> None:
        async with NativeClient.connect(base, http) as client:
            await client.ws.send_str("{" * (i + 1))
            await client.ws.receive(timeout=5)

    async with NativeClient.connect(base, http) as good:
        await good.send(type="start", context_id="g", text="A good session keeps speaking.", end=True,
                        format="pcm_16000")
        await asyncio.gather(*(misbehave(i) for i in range(20)))
        await good.pump_until(lambda c: c.ended("g"), 30)
        res = good.result("g")
        assert res.final is not None and res.final["reason"] == "completed"
        assert res.seqs == list(range(len(res.frames)))
