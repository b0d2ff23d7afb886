"""Voice ids at the gateway (issue 12, item 5), on real processes: one rule for every entry point.

Native ``start``, the ElevenLabs WebSocket and HTTP paths and OpenAI's ``voice`` all refuse a voice id
that is not 1-64 characters of ``A-Z a-z 0-9 _ -`` with ``invalid_request``, before any job exists;
the worker never sees it and the stack keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from yarl import URL

from tests.faults.support import VOICE, metric, start_stack
from tests.support.procs import Procs
from tests.support.stack import NativeClient
from tests.support.timing import LOAD_MARGIN_S

BAD_NATIVE = ["..", "../../v1/user", "a/b", "v 1", "x" * 65, "x" * 40_000, "é"]
# As URL path segments (percent-encoded where a client would have to): `..` itself is normalised away by
# clients and servers alike, so its encoded forms are what reaches a route.
BAD_PATH = ["%2E%2E", "a%2Fb", "v%201", "x" * 65, "a.b"]


async def test_every_entry_point_refuses_bad_voice_ids(procs: Procs, redis_url: str) -> None:
    stack = await start_stack(procs, redis_url)
    worker = stack.workers[0]
    jobs_before = await metric(worker, "tts_jobs_total")
    async with aiohttp.ClientSession() as http:
        async with NativeClient.connect(stack.base, http) as c:
            for i, voice in enumerate(BAD_NATIVE):
                r = await c.speak(f"bad{i}", "Hello there.", voice=voice, timeout=10)
                assert r.error is not None and r.error["code"] == "invalid_request", r.error
                assert r.error["details"]["field"] == "voice"
                assert voice not in r.error["message"] or len(voice) < 3
            ok = await c.speak("good", "Hello there.", voice=VOICE)
            assert ok.final is not None and ok.audio  # the session kept serving

        for voice in BAD_PATH:
            # encoded=True: sent as written, not normalised by the client
            async with http.post(URL(stack.base + f"/v1/text-to-speech/{voice}/stream", encoded=True),
                                 json={"text": "Hello there."}) as resp:
                body = await resp.json()
                assert resp.status == 422 and "invalid_request" in json.dumps(body), (voice, resp.status, body)
            async with http.post(stack.base + "/v1/audio/speech",
                                 json={"input": "Hello there.", "voice": URL(f"/{voice}", encoded=True).path[1:],
                                       "model": "tts-1"}) as resp:
                body = await resp.json()  # OpenAI's error shape and status
                assert resp.status == 400 and body["error"]["code"] == "invalid_request", (voice, body)
                assert body["error"]["param"] == "voice"

            # ElevenLabs multi-stream: the context is refused, the socket stays.
            url = URL(stack.base.replace("http", "ws", 1) + f"/v1/text-to-speech/{voice}/multi-stream-input",
                      encoded=True)
            async with http.ws_connect(url) as ws:
                await ws.send_str(json.dumps({"text": " ", "context_id": "c1"}))
                await ws.send_str(json.dumps({"text": "Hello there. ", "context_id": "c1", "flush": True}))
                frame = json.loads((await ws.receive(timeout=10)).data)
                assert frame["error"] == "invalid_request" and frame["contextId"] == "c1", frame
                assert not ws.closed

        async with http.post(stack.base + "/v1/audio/speech",
                             json={"input": "Hello there.", "voice": "alloy", "model": "tts-1"}) as resp:
            assert resp.status == 200 and len(await resp.read()) > 1000  # OpenAI's names still map
    # Only the two good requests ran. The worker counts a job just after its final went out, so the
    # second count may land a moment after the client has its audio.
    deadline = time.monotonic() + 2 + LOAD_MARGIN_S
    while await metric(worker, "tts_jobs_total") < jobs_before + 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await metric(worker, "tts_jobs_total") == jobs_before + 2
