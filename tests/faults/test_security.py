"""Security on real processes: every route needs a key, admin is separate, Origin is checked, secrets stay secret."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import aiohttp
import pytest
from emulator.synth import decode_text
from gateway.app import create_app

from shared.errors import ERRORS_BY_CODE
from shared.settings import Settings
from tests.faults.support import ADMIN_TOKEN, UPSTREAM_KEY, VOICE, Stack, start_stack
from tests.support.procs import Procs
from tests.support.stack import NativeClient

TOKEN_SECRET = "tsec_fake_signing_Zr4Np8Kq1Lm6"
ALLOWED = "https://app.example.com"
# Public on purpose: probes, the scrape endpoint and the demo page's static files hold no secrets.
PUBLIC = {"/healthz", "/readyz", "/metrics", "/", "/static/{name}"}
PARAMS = {"voice_id": VOICE, "key_id": "key_0123456789abcdef", "name": "app.js"}


def routes() -> list[tuple[str, str]]:
    """(method, path template) of every route the gateway serves, from its own route table."""
    app = create_app(Settings.from_env({}, auth_disabled=False))
    return sorted({(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None})


def fill(template: str) -> str:
    """A concrete path for a route template."""
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "x"), template)


async def secure_stack(procs: Procs, redis_url: str) -> Stack:
    """Auth on, a distinctive secret everywhere, and an emulator that accepts only the upstream key."""
    return await start_stack(procs, redis_url, emulator={"api_key": UPSTREAM_KEY}, AUTH_DISABLED=False,
                             TOKEN_SECRET=TOKEN_SECRET, ALLOWED_ORIGINS=ALLOWED)


async def new_key(http: aiohttp.ClientSession, base: str) -> str:
    """A client key from the admin API."""
    async with http.post(base + "/admin/keys", json={"name": "security-test"},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        return str(body["key"])


async def probe(http: aiohttp.ClientSession, base: str, method: str, path: str,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of one plain HTTP request (WebSocket routes: the handshake, or the first answer after it)."""
    url = base + path
    body: Any = {"text": "hello", "model": "tts-1", "voice": VOICE, "input": "hello"} \
        if method in ("POST", "PATCH") else None
    async with http.request(method, url, json=body, headers=headers or {}, allow_redirects=False) as resp:
        text = await resp.text()
        if resp.status != 400 or "websocket" not in text.lower():
            return resp.status, text
    # A WebSocket route that wants a real handshake: do one, and say nothing but an unkeyed hello.
    try:
        async with http.ws_connect(url.replace("http", "ws", 1), headers=headers or {}) as ws:
            await ws.send_str(json.dumps({"text": " "}))
            frames = []
            async for msg in ws:
                frames.append(str(msg.data))
            return ws.close_code or 0, "\n".join(frames)
    except aiohttp.WSServerHandshakeError as e:
        return e.status, e.message


def refused_for_want_of_a_key(method: str, status: int, body: str) -> bool:
    """401 over HTTP, 4401 on the native WebSocket, ElevenLabs' 1008 with its 'missing API key' on theirs.

    A HEAD without an upgrade on a WebSocket route gets aiohttp's 400 and serves nothing either.
    """
    return status in (401, 4401) or (status == 1008 and "api key" in body.lower()) or \
        (method == "HEAD" and status == 400)


async def test_every_route_but_probes_and_static_needs_a_key(procs: Procs, redis_url: str) -> None:
    stack = await secure_stack(procs, redis_url)
    table = routes()
    assert ("GET", "/v1/ws") in table and any(p.startswith("/admin/") for _, p in table)
    open_doors: list[str] = []
    async with aiohttp.ClientSession() as http:
        key = await new_key(http, stack.base)
        for method, template in table:
            path = fill(template)
            status, body = await probe(http, stack.base, method, path)
            if template in PUBLIC:
                assert status == 200, (method, path, status, body[:200])
                continue
            if not refused_for_want_of_a_key(method, status, body):
                open_doors.append(f"{method} {template} answered {status} without a key: {body[:120]}")
        # The admin token is its own secret: a valid client key opens no admin route, and the admin
        # token is no client key.
        for method, template in table:
            if template.startswith("/admin/"):
                status, body = await probe(http, stack.base, method, fill(template),
                                           {"Authorization": f"Bearer {key}"})
                assert status in (401, 403) or (method == "HEAD" and status == 400), (method, template, status)
        status, _ = await probe(http, stack.base, "GET", "/v1/catalog", {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 401
        status, _ = await probe(http, stack.base, "GET", "/v1/catalog", {"xi-api-key": key})
        assert status == 200
    assert not open_doors, "\n".join(open_doors)


@pytest.mark.parametrize("path", ["/v1/ws", f"/v1/text-to-speech/{VOICE}/stream-input",
                                  f"/v1/text-to-speech/{VOICE}/multi-stream-input"])
async def test_websocket_origin_is_checked_on_browser_routes(procs: Procs, redis_url: str, path: str) -> None:
    stack = await secure_stack(procs, redis_url)
    ws_url = stack.base.replace("http", "ws", 1) + path
    async with aiohttp.ClientSession() as http:
        key = await new_key(http, stack.base)
        auth = {"xi-api-key": key}
        for origin, allowed in ((None, True), (ALLOWED, True), (stack.base, True),  # non-browser, listed, own page
                                ("https://evil.example", False), ("null", False),
                                ("https://app.example.com.evil.example", False)):
            headers = {**auth, **({"Origin": origin} if origin else {})}
            try:
                async with http.ws_connect(ws_url, headers=headers) as ws:
                    opened = await _stays_open(ws, native=path == "/v1/ws")
            except aiohttp.WSServerHandshakeError as e:
                assert e.status == 403, (origin, e.status)
                opened = False
            assert opened is allowed, (path, origin)


async def _stays_open(ws: aiohttp.ClientWebSocketResponse, native: bool) -> bool:
    """True if the session starts (native: its session event; ElevenLabs: no close after the init message)."""
    if not native:
        await ws.send_str(json.dumps({"text": " "}))
    try:
        msg = await ws.receive(timeout=1.5)
    except TimeoutError:
        return True  # ElevenLabs' protocol says nothing until there is audio
    if msg.type == aiohttp.WSMsgType.TEXT:
        data = json.loads(msg.data)
        if data.get("type") == "session":
            return True
        assert "origin" in json.dumps(data).lower(), data
        return False
    return msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


async def test_no_secret_reaches_a_log_a_response_or_a_metric(procs: Procs, redis_url: str) -> None:
    stack = await secure_stack(procs, redis_url)
    seen: list[str] = []  # every response body and error event a client got (create-key answer excepted)
    async with aiohttp.ClientSession() as http:
        key = await new_key(http, stack.base)
        near_misses = [key + "x", key[:-1], ADMIN_TOKEN + "x", UPSTREAM_KEY, TOKEN_SECRET, "tts_live_" + "A" * 43]
        for bad in near_misses:  # wrong credentials everywhere a credential goes
            for path, hdrs in (("/v1/catalog", {"xi-api-key": bad}), ("/v1/usage", {"Authorization": f"Bearer {bad}"}),
                               ("/admin/keys", {"Authorization": f"Bearer {bad}"}),
                               (f"/v1/catalog?token={bad}", {})):
                async with http.get(stack.base + path, headers=hdrs) as resp:
                    seen.append(await resp.text())
                    assert resp.status in (401, 403), (path, resp.status)
        async with http.post(stack.base + "/v1/tokens", headers={"xi-api-key": key}, json={}) as resp:
            token_body = await resp.text()
            assert resp.status in (200, 201), token_body
        # Real synthesis with the key (the worker must present the upstream key to the emulator) ...
        async with NativeClient.connect(stack.base, http, headers={"xi-api-key": key}) as c:
            res = await c.speak("s", "Secrets stay secret.", format="pcm_16000")
            await c.send(type="start", context_id="bad", format="nope", text="x")  # ... and a context error
            await c.pump_until(lambda c: c.ended("bad"), 10)
            seen.extend(json.dumps(e) for r in c.results.values() for e in r.events if e["type"] == "error")
        assert res.final is not None and decode_text(res.audio, 16000) == "Secrets stay secret.", res.error
        async with http.post(stack.base + f"/v1/text-to-speech/{VOICE}", headers={"xi-api-key": key},
                             json={"text": 123}) as resp:
            seen.append(await resp.text())
        async with http.get(stack.base + "/admin/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            seen.append(await resp.text())
        async with http.get(stack.base + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            seen.append(await resp.text())
        metrics = []
        for proc in (*stack.gateways, *stack.workers):
            async with http.get(proc.base_url + "/metrics") as resp:
                metrics.append(await resp.text())
    for body in seen:
        with contextlib.suppress(ValueError):
            code = json.loads(body).get("code")
            assert code is None or code in ERRORS_BY_CODE, body
    secrets = {"ELEVENLABS_API_KEY": UPSTREAM_KEY, "ADMIN_TOKEN": ADMIN_TOKEN, "client key": key,
               "TOKEN_SECRET": TOKEN_SECRET}
    # The key's secret part alone must not leak either (a log might print it without the prefix).
    secrets["client key secret part"] = key.removeprefix("tts_live_")
    places = {f"{p.name} log": p.output() for p in (*stack.gateways, *stack.workers)}
    places["responses"] = "\n".join(seen) + token_body
    places["metrics"] = "\n".join(metrics)
    leaks = [f"{what} in {where}" for what, s in secrets.items() for where, text in places.items() if s in text]
    assert not leaks, leaks
    assert sum(len(t) for t in places.values()) > 10_000  # there was plenty to search
