"""``tts_errors_total`` counts each error a client is told about exactly once, read from ``/metrics``.

A context that failed upstream used to be counted by the session and again by the edge that then
reported it (the whole ``stream-input`` socket failing, an HTTP error response): twice per error.
"""

from __future__ import annotations

from tests.compat.conftest import Stack
from tests.compat.elclient import ElClient
from tests.support.scrape import metric

ERRORS = "tts_errors_total"


def _reject_everything(stack: Stack) -> None:
    assert stack.emu is not None
    stack.emu.set_config(reject_voice_ids=["nobody"])


async def test_a_failed_stream_input_context_is_counted_once(el: Stack) -> None:
    _reject_everything(el)
    before = await metric(el.http, el.base, ERRORS)
    async with ElClient.connect(el.base, el.http, multi=False, voice="nobody", output_format="pcm_16000") as c:
        await c.send(text="Who am I?")
        await c.send(text="")
        assert await c.drain_until_closed(timeout=20) == 1008
    code = c.socket_errors[0]["error"]
    assert await metric(el.http, el.base, ERRORS) - before == 1
    assert await metric(el.http, el.base, ERRORS, code=code) >= 1


async def test_a_failed_multi_stream_context_is_counted_once(el: Stack) -> None:
    _reject_everything(el)
    before = await metric(el.http, el.base, ERRORS)
    async with ElClient.connect(el.base, el.http, multi=True, voice="nobody", output_format="pcm_16000") as c:
        await c.send(text="Who am I? ", context_id="a")
        await c.send(context_id="a", close_context=True)
        await c.pump_until(lambda cl: cl.final("a"), timeout=20)
    assert len(c.get("a").errors) == 1
    assert await metric(el.http, el.base, ERRORS) - before == 1


async def test_a_failed_http_request_is_counted_once(el: Stack) -> None:
    _reject_everything(el)
    before = await metric(el.http, el.base, ERRORS)
    url = f"{el.base}/v1/text-to-speech/nobody/stream?output_format=pcm_16000"
    async with el.http.post(url, json={"text": "Who am I?"}) as r:
        assert r.status >= 400
        code = (await r.json())["detail"]["status"]
    assert await metric(el.http, el.base, ERRORS) - before == 1
    assert await metric(el.http, el.base, ERRORS, code=code) >= 1
