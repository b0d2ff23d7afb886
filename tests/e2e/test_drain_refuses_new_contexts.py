"""While draining, a session keeps its in-flight contexts but new ones are refused by name."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from gateway.app import create_app
from gateway.appkeys import SERVICES

from tests.conftest import fast_settings
from tests.support.stack import NativeClient, running_worker


async def test_draining_gateway_refuses_new_contexts_and_finishes_old_ones(redis_url: str) -> None:
    settings = fast_settings(redis_url, providers=("local",))
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with (running_worker(settings), aiohttp.ClientSession() as http,
                    NativeClient.connect(base, http) as client):
            await client.send(type="start", context_id="old", format="pcm_16000", end=True,
                              text="This sentence was already on its way. It must be heard in full.")
            await client.pump_until(lambda c: bool(c.result("old").frames))
            app[SERVICES].state.draining = True
            await client.send(type="start", context_id="new", text="Too late.", end=True)
            await client.pump_until(lambda c: c.ended("new") and c.ended("old"), 30)
        new, old = client.result("new"), client.result("old")
        assert new.error is not None and new.error["code"] == "shutting_down" and not new.frames
        assert old.final is not None and old.final["reason"] == "completed"
        assert old.seqs == list(range(len(old.frames)))
    finally:
        await runner.cleanup()
