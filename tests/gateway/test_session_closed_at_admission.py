"""A client that leaves while its key's limits are being checked gets no context and keeps no slot."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from gateway.app import create_app
from gateway.appkeys import SERVICES
from gateway.contexts import ContextRequest
from gateway.session import SynthesisSession

from shared.audio.formats import parse_format
from shared.errors import ContextClosed
from tests.gateway.tenancy_support import ADMIN, tenancy_settings


async def test_a_session_closed_during_the_key_check_gives_its_slot_and_characters_back(redis_url: str) -> None:
    app = create_app(tenancy_settings(redis_url))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"},
                                 json={"name": "leaver", "quota_chars": 1000, "max_contexts": 1}) as r:
                created = await r.json()
                assert r.status == 201, created
            session = SynthesisSession(app[SERVICES], api="native", tenant=created["id"])
            await session.open()
            request = ContextRequest(context_id="c", voice_id="joe", provider="local", model_id="",
                                     fmt=parse_format("pcm_16000"), text="Never spoken.", input_closed=True)
            start = asyncio.create_task(session.start(request))
            await asyncio.sleep(0)  # the start is now waiting for Redis to answer the key check
            await session.close()
            with pytest.raises(ContextClosed):
                await start
            assert not session.contexts
            headers = {"xi-api-key": created["key"]}
            async with asyncio.timeout(10):  # settling runs in the background
                while True:
                    async with http.get(base + "/v1/usage", headers=headers) as r:
                        usage = await r.json()
                    today = usage["days"][0]
                    if usage["live_contexts"] == 0 and today["reserved"] == 0:
                        break
                    await asyncio.sleep(0.05)
            assert today["characters"] == 0 and usage["remaining_today"] == 1000
    finally:
        await runner.cleanup()
