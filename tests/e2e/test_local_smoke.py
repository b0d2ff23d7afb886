"""Smoke: the whole path on the local Piper voice, in-process gateway and worker, real Redis."""

from __future__ import annotations

import aiohttp

from tests.conftest import fast_settings
from tests.support.stack import NativeClient, running_gateway, running_worker


async def test_local_voice_whole_utterance(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=("local",))
    async with (running_worker(settings), running_gateway(settings) as base, aiohttp.ClientSession() as http,
                NativeClient.connect(base, http) as client):
        res = await client.speak("c1", "Hello there. This is a test.", format="pcm_16000", timeout=60)
    assert res.error is None, res.error
    assert res.final is not None and res.final["reason"] == "completed"
    assert res.seqs == list(range(len(res.frames)))
    seconds = len(res.audio) / 32000
    assert 0.8 < seconds < 6, seconds
