"""Client keys where ElevenLabs and OpenAI clients put them, on every compatible route."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from emulator.synth import decode_text

from tests.compat.conftest import EL_VOICE, Stack, el_stack
from tests.compat.elclient import ElClient

ADMIN = "admin-token-for-compat-tests"


@contextlib.asynccontextmanager
async def keyed(redis_url: str) -> AsyncIterator[tuple[Stack, str]]:
    """The emulator stack with keys enforced, and one fresh client key."""
    async with el_stack(redis_url, auth_disabled=False, admin_token=ADMIN, heartbeat_ttl_s=3.0) as stack:
        async with stack.http.post(f"{stack.base}/admin/keys", json={"name": "compat"},
                                   headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 201, await r.text()
            key = (await r.json())["key"]
        yield stack, key


@pytest.fixture
async def auth(redis_url: str) -> AsyncIterator[tuple[Stack, str]]:
    async with keyed(redis_url) as s:
        yield s


async def _speak_multi(stack: Stack, headers: dict[str, str] | None = None, first: dict[str, Any] | None = None,
                       **query: Any) -> ElClient:
    async with ElClient.connect(stack.base, stack.http, voice=EL_VOICE, headers=headers,
                                output_format="pcm_16000", **query) as c:
        await c.send(text=" ", context_id="k", **(first or {}))
        await c.send(text="Keyed.", context_id="k", flush=True)
        await c.send(context_id="k", close_context=True)
        await c.pump_until(lambda c: c.final("k"), timeout=20)
    return c


@pytest.mark.parametrize("where", ["header", "bearer", "query", "first_message"])
async def test_websocket_key_in_every_place_clients_put_it(auth: tuple[Stack, str], where: str) -> None:
    stack, key = auth
    kw: dict[str, Any] = {
        "header": {"headers": {"xi-api-key": key}},
        "bearer": {"headers": {"Authorization": f"Bearer {key}"}},
        "query": {"authorization": key},
        "first_message": {"first": {"xi_api_key": key}},
    }[where]
    c = await _speak_multi(stack, **kw)
    assert decode_text(c.get("k").audio, 16000) == "Keyed." and not c.socket_errors


async def test_websocket_without_a_valid_key_is_refused(auth: tuple[Stack, str]) -> None:
    stack, _ = auth
    for kw in ({}, {"headers": {"xi-api-key": "tts_live_not-a-real-key-at-all"}},
               {"first": {"xi_api_key": "tts_live_not-a-real-key-at-all"}}):
        c = await _speak_multi(stack, **kw)
        assert c.close_code == 1008
        assert c.socket_errors[0]["error"] == "unauthorized" and c.socket_errors[0]["code"] == 1008
        assert c.get("k").audio == b""


async def test_single_stream_key_in_the_bos_message(auth: tuple[Stack, str]) -> None:
    stack, key = auth
    async with ElClient.connect(stack.base, stack.http, multi=False, voice=EL_VOICE,
                                output_format="pcm_16000") as c:
        await c.send(text=" ", **{"xi-api-key": key})
        await c.send(text="Single and keyed.")
        await c.send(text="")
        assert await c.drain_until_closed() == 1000
    assert decode_text(c.get(None).audio, 16000) == "Single and keyed."


async def test_http_routes_need_a_key(auth: tuple[Stack, str]) -> None:
    stack, key = auth
    url = f"{stack.base}/v1/text-to-speech/{EL_VOICE}/stream?output_format=pcm_16000"
    async with stack.http.post(url, json={"text": "Keyed."}) as r:
        assert r.status == 401 and (await r.json())["detail"]["status"] == "unauthorized"
    async with stack.http.post(url, json={"text": "Keyed."}, headers={"xi-api-key": key}) as r:
        assert r.status == 200 and decode_text(await r.read(), 16000) == "Keyed."
    for path in ("/v1/voices", "/v1/models"):
        async with stack.http.get(stack.base + path) as r:
            assert r.status == 401
        async with stack.http.get(stack.base + path, headers={"xi-api-key": key}) as r:
            assert r.status == 200


async def test_openai_route_takes_bearer_and_answers_in_openai_shape(auth: tuple[Stack, str]) -> None:
    stack, key = auth
    body = {"model": "tts-1", "voice": "alloy", "input": "Keyed.", "response_format": "pcm"}
    async with stack.http.post(f"{stack.base}/v1/audio/speech", json=body,
                               headers={"Authorization": "Bearer sk-wrong"}) as r:
        assert r.status == 401
        err = (await r.json())["error"]
        assert err["code"] == "unauthorized" and err["type"] == "authentication_error"
    async with stack.http.post(f"{stack.base}/v1/audio/speech", json=body,
                               headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status == 200 and decode_text(await r.read(), 24000) == "Keyed."


async def test_upstream_key_never_reaches_clients(auth: tuple[Stack, str]) -> None:
    stack, key = auth
    seen: list[str] = []
    c = await _speak_multi(stack, headers={"xi-api-key": key})
    seen += [str(f) for f in c.frames]
    async with stack.http.get(f"{stack.base}/v1/voices", headers={"xi-api-key": key}) as r:
        seen.append(await r.text())
    async with stack.http.get(f"{stack.base}/v1/models", headers={"xi-api-key": key}) as r:
        seen.append(await r.text())
    assert not any(stack.settings.elevenlabs_api_key in s for s in seen)  # type: ignore[operator]



async def test_foreign_page_origin_gets_no_socket(auth: tuple[Stack, str]) -> None:
    stack, key = auth
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with ElClient.connect(stack.base, stack.http, voice=EL_VOICE,
                                    headers={"xi-api-key": key, "Origin": "https://evil.example"}):
            pass
    assert info.value.status == 403
