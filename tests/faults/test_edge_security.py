"""The gateway's edge under attack, on real processes: what a web page, a crafted header or a slow client can do.

Each test replays one attack of issue 12 against a live stack (gateway, worker and emulator processes,
a real redis-server) over real sockets, and asserts the answer is a typed refusal while the gateway
keeps serving. Teardown fails the test if any process logged a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp
import psutil
import redis.asyncio as aioredis

from shared import keys
from tests.faults.support import ADMIN_TOKEN, VOICE, RawWS, Stack
from tests.faults.test_security import ALLOWED, new_key, secure_stack
from tests.support.procs import ROOT, Procs

SPEECH = "/v1/audio/speech"
SPEECH_BODY = json.dumps({"model": "tts-1", "voice": VOICE, "input": "Hello there.", "response_format": "pcm"})
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def raw_http(base: str, head: bytes, body: bytes = b"", *, trickle: bytes = b"", every: float = 0.5,
                   timeout: float = 30.0) -> tuple[int | None, bytes, float]:
    """Send a hand-written request (any bytes), then ``trickle`` one byte per ``every`` s while the server listens.

    Returns (status or None if the server hung up without answering, response bytes, seconds until the
    server closed the connection).
    """
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    t0 = time.monotonic()
    writer.write(head + body)
    await writer.drain()
    received = b""

    async def feed() -> None:
        for b in trickle:
            await asyncio.sleep(every)
            if writer.transport.is_closing():
                return
            writer.write(bytes([b]))

    feeder = asyncio.create_task(feed())
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                received += chunk
    except (ConnectionError, TimeoutError):
        pass
    closed_after = time.monotonic() - t0
    feeder.cancel()
    writer.close()
    status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else None
    return status, received, closed_after


def json_body(response: bytes) -> dict[str, Any]:
    """The JSON body of a raw (non-chunked) response."""
    return dict(json.loads(response.partition(b"\r\n\r\n")[2]))


async def dev_and_secure(procs: Procs, redis_url: str, **env: Any) -> tuple[Stack, str]:
    """The secure stack of test_security plus a second gateway in dev mode (AUTH_DISABLED) on the same Redis."""
    stack = await secure_stack(procs, redis_url)
    dev = stack.add_gateway("devgateway", AUTH_DISABLED=True, **env)
    await procs.ready(dev)
    return stack, dev.base_url


# ---- item 8: a web page driving a dev-mode gateway; CORS ----------------------------------------------------
async def test_dev_mode_refuses_cross_site_posts_and_dns_rebinding(procs: Procs, redis_url: str) -> None:
    _, dev = await dev_and_secure(procs, redis_url)
    port = dev.rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as http:
        # A cross-site form or fetch needs no preflight for these types: the body is JSON, the type is not.
        for ctype in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": ctype} if ctype else {}
            data = SPEECH_BODY.encode()
            async with http.post(dev + SPEECH, data=data, headers=headers) as resp:
                body = await resp.json()
                assert resp.status == 415 and body["error"]["code"] == "unsupported_media_type", (ctype, body)
            async with http.post(dev + f"/v1/text-to-speech/{VOICE}", data=data, headers=headers) as resp:
                assert resp.status == 415, (ctype, await resp.text())
                assert (await resp.json())["detail"]["status"] == "unsupported_media_type"
        async with http.post(dev + SPEECH, data=SPEECH_BODY, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200 and len(await resp.read()) > 1000  # JSON still speaks
        # DNS rebinding: the page's own name now resolves to the gateway, so Origin and Host agree.
        rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        async with http.post(dev + SPEECH, data=SPEECH_BODY,
                             headers={**rebound, "Content-Type": "application/json"}) as resp:
            assert resp.status == 403 and (await resp.json())["code"] == "forbidden"
        async with http.get(dev + "/v1/catalog", headers={"Host": f"evil.example:{port}",
                                                         "Sec-Fetch-Site": "same-origin"}) as resp:
            assert resp.status == 403  # a same-origin GET carries no Origin, but Sec-Fetch-* says "browser"
        for headers in (rebound, {"Origin": "https://evil.example"}):
            try:
                async with http.ws_connect(dev.replace("http", "ws", 1) + "/v1/ws", headers=headers):
                    raise AssertionError(f"a WebSocket opened with {headers}")
            except aiohttp.WSServerHandshakeError as e:
                assert e.status == 403, headers
        # Loopback names, pages on this machine, and non-browser clients (any Host) are served.
        for headers in ({"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"},
                        {"Host": f"[::1]:{port}", "Sec-Fetch-Site": "same-origin"},
                        {"Host": f"127.0.0.2:{port}", "Origin": "http://127.0.0.1:3000"},
                        {"Host": f"tts-gateway.internal:{port}"}):
            async with http.get(dev + "/v1/catalog", headers=headers) as resp:
                assert resp.status == 200, headers
        ws = await RawWS.connect(dev, "/v1/ws", headers={"Origin": f"http://localhost:{port}"})
        assert ws.status == 101
        ws.close()


async def test_cors_preflight_and_headers_only_for_allowed_origins(procs: Procs, redis_url: str) -> None:
    stack = await secure_stack(procs, redis_url)
    async with aiohttp.ClientSession() as http:
        key = await new_key(http, stack.base)
        preflight = {"Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type, xi-api-key, x-admin-token"}
        async with http.options(stack.base + SPEECH, headers={**preflight, "Origin": ALLOWED}) as resp:
            assert resp.status == 204
            h = resp.headers
            assert h["Access-Control-Allow-Origin"] == ALLOWED and "POST" in h["Access-Control-Allow-Methods"]
            allowed_headers = {x.strip() for x in h["Access-Control-Allow-Headers"].split(",")}
            assert allowed_headers == {"content-type", "xi-api-key"}  # never the admin token
            assert "Origin" in h.getall("Vary")
        for origin in ("https://evil.example", "null", ALLOWED + ".evil.example"):
            async with http.options(stack.base + SPEECH, headers={**preflight, "Origin": origin}) as resp:
                assert resp.status == 403, origin
                assert not [k for k in resp.headers if k.lower().startswith("access-control-")], origin
        # The request itself: the allowed page may read the answer (and the Retry-After of a 429).
        auth = {"xi-api-key": key, "Content-Type": "application/json"}
        async with http.post(stack.base + SPEECH, data=SPEECH_BODY, headers={**auth, "Origin": ALLOWED}) as resp:
            await resp.read()
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
            assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
        async with http.post(stack.base + SPEECH, data=SPEECH_BODY,
                             headers={**auth, "Origin": "https://evil.example"}) as resp:
            await resp.read()
            assert "Access-Control-Allow-Origin" not in resp.headers


# ---- item 10 and 11: bad Unicode and non-finite numbers at every entry point --------------------------------
async def test_bad_unicode_and_non_finite_numbers_get_typed_answers(procs: Procs, redis_url: str) -> None:
    stack = await secure_stack(procs, redis_url)
    base = stack.base
    async with aiohttp.ClientSession() as http:
        key = await new_key(http, base)
        # \xff in every credential header: 401 (admin: 401), never a 500.
        for path, name, value in (("/v1/catalog", b"xi-api-key", b"tts_live_\xff\xfe" + b"A" * 40),
                                  ("/v1/catalog", b"Authorization", b"Bearer tts_live_\xff" + b"A" * 40),
                                  ("/v1/catalog", b"Authorization", b"Bearer tts_tok_\xff.x"),
                                  ("/admin/keys", b"X-Admin-Token", b"adm_\xff\xff"),
                                  ("/admin/keys", b"Authorization", b"Bearer \xffadm")):
            head = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + name + b": " + value + \
                b"\r\nConnection: close\r\n\r\n"
            status, resp, _ = await raw_http(base, head, timeout=10)
            assert status == 401 and json_body(resp)["code"] == "unauthorized", (name, value, resp[:300])
        # \xff in the other headers the edge reads (Origin, Host, Content-Type): typed answers, never a 500.
        keyed = b"xi-api-key: " + key.encode() + b"\r\n"
        for head in (b"GET /v1/catalog HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://\xff.example\r\n" + keyed,
                     b"GET /v1/catalog HTTP/1.1\r\nHost: \xff.example\r\nSec-Fetch-Site: none\r\n" + keyed,
                     b"POST /v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/\xffjson\r\n"
                     b"Content-Length: 2\r\n" + keyed,
                     b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     b"Origin: https://\xff\r\n" + keyed):
            status, resp, _ = await raw_http(base, head + b"Connection: close\r\n\r\n" +
                                             (b"{}" if head.startswith(b"POST") else b""), timeout=10)
            assert status in (200, 403, 415), (head, resp[:300])
        for query in ("token=%FF%FE", "token=tts_tok_%ED%A0%80.x", "single_use_token=%C3"):
            async with http.get(base + "/v1/catalog?" + query) as resp:
                assert resp.status == 401, query
        async with http.post(base + "/admin/reset-queues?queue=%FF", headers=ADMIN) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "not_found"
        # HTTP bodies: a lone surrogate, NaN, Infinity and an overflowing number.
        auth = {"xi-api-key": key, "Content-Type": "application/json"}
        for path, raw, code in (("/v1/tokens", '{"ttl_s": NaN}', "invalid_json"),
                                ("/v1/tokens", '{"ttl_s": Infinity}', "invalid_json"),
                                ("/v1/tokens", '{"ttl_s": 1e999}', "invalid_request"),
                                ("/v1/tokens", '{"ttl_s": 1' + "0" * 400 + "}", "invalid_request"),
                                (SPEECH, '{"model":"tts-1","voice":"alloy","input":"hi \\ud800"}', "invalid_request"),
                                (SPEECH, '{"model":"tts-1","voice":"alloy","input":"hi","speed":NaN}', "invalid_json"),
                                (f"/v1/text-to-speech/{VOICE}", '{"text":"\\udfff"}', "invalid_request")):
            async with http.post(base + path, data=raw, headers=auth) as resp:
                body = await resp.json()
                got = body.get("code") or body.get("error", {}).get("code") or body.get("detail", {}).get("status")
                assert resp.status in (400, 422) and got == code, (path, raw[:60], resp.status, body)
        async with http.post(base + "/admin/keys", data='{"name": "x\\ud800"}',
                             headers={**ADMIN, "Content-Type": "application/json"}) as resp:
            assert resp.status == 422 and (await resp.json())["code"] == "invalid_request"
        # Native socket: a lone surrogate in start and in streamed text is a typed error; the session lives on.
        ws = await RawWS.connect(base, "/v1/ws", headers={"xi-api-key": key})
        assert ws.status == 101
        await ws.read_frame()  # session
        ws.send_text('{"type":"start","context_id":"a","text":"hello \\ud800","end":true}')
        ws.send_text('{"type":"start","context_id":"b","format":"pcm_16000"}')
        ws.send_text('{"type":"text","context_id":"b","text":"\\udc00 there"}')
        ws.send_text('{"type":"text","context_id":"b","text":"Still here.","flush":true}')
        ws.send_text('{"type":"end","context_id":"b"}')
        await ws.drain()
        events, frames = await _native_until_final(ws, "b", 30)
        errors = [e for e in events if e["type"] == "error"]
        assert [e["code"] for e in errors] == ["invalid_request", "invalid_request"], errors
        assert any(e["type"] == "final" and e["reason"] == "completed" for e in events) and frames > 0
        ws.close()
        # ElevenLabs multi-stream socket: a typed error frame, never internal_error / 1011.
        ws = await RawWS.connect(base, f"/v1/text-to-speech/{VOICE}/multi-stream-input", headers={"xi-api-key": key})
        assert ws.status == 101
        ws.send_text('{"text":" ","context_id":"c1"}')
        ws.send_text('{"text":"hi \\ud800 ","context_id":"c1"}')
        await ws.drain()
        events, _, code = await ws.read_until_close(5)
        assert code != 1011 and "internal_error" not in json.dumps(events), (code, events)
        ws.close()
        async with http.get(base + "/v1/catalog", headers={"xi-api-key": key}) as resp:
            assert resp.status == 200  # still serving


async def _native_until_final(ws: RawWS, cid: str, timeout: float) -> tuple[list[dict[str, Any]], int]:
    events: list[dict[str, Any]] = []
    frames = 0
    async with asyncio.timeout(timeout):
        while True:
            op, data = await ws.read_frame()
            if op == 2:
                frames += 1
            elif op == 1:
                ev = json.loads(data)
                events.append(ev)
                if ev["type"] in ("final", "error") and ev.get("context_id") == cid:
                    return events, frames
            elif op == 8:
                raise AssertionError(f"the session closed: {data!r} after {events}")


# ---- item 12: read deadlines --------------------------------------------------------------------------------
async def test_trickled_headers_and_bodies_hit_read_deadlines(procs: Procs, redis_url: str) -> None:
    stack = await secure_stack(procs, redis_url)
    g = stack.add_gateway("deadlines", HEADER_READ_TIMEOUT_S=2, BODY_READ_TIMEOUT_S=2, AUTH_DISABLED=False)
    await procs.ready(g)
    async with aiohttp.ClientSession() as http:
        key = await new_key(http, g.base_url)
    # Headers one byte every 0.5 s: 60 bytes would take 30 s; the gateway hangs up after its 2 s.
    status, _, closed_after = await raw_http(g.base_url, b"GET /healthz HTTP/1.1\r\n",
                                             trickle=b"X-Slow: " + b"a" * 50 + b"\r\n\r\n", timeout=30)
    assert status is None and closed_after < 2 + 6, closed_after
    # A keyed client's body: 20 of 2,000 bytes, then a byte every 0.5 s. 408, typed, and the connection closed.
    head = (f"POST {SPEECH} HTTP/1.1\r\nHost: 127.0.0.1\r\nxi-api-key: {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n").encode()
    status, resp, closed_after = await raw_http(g.base_url, head, b'{"input": "' + b"a" * 9, trickle=b"b" * 60,
                                                timeout=30)
    assert status == 408, resp[:300]
    assert json_body(resp)["error"]["code"] == "request_timeout"
    assert closed_after < 2 + 6, closed_after


# ---- item 15 and 16: the demo page's CSP; reset-queues only on known queues --------------------------------------
async def test_demo_csp_ignores_host_and_reset_queues_refuses_other_keys(procs: Procs, redis_url: str) -> None:
    stack = await secure_stack(procs, redis_url)
    async with aiohttp.ClientSession() as http:
        policies = set()
        for host in ("127.0.0.1", "evil.example; script-src *", "x'unsafe-inline'"):
            async with http.get(stack.base + "/", headers={"Host": host}) as resp:
                assert resp.status == 200
                policies.add(resp.headers["Content-Security-Policy"])
        assert len(policies) == 1 and "evil" not in policies.pop()
        key = await new_key(http, stack.base)
        r = aioredis.Redis.from_url(redis_url)
        try:
            indexed = await r.zcard(keys.CLIENT_KEY_INDEX)
            for queue in (keys.CLIENT_KEY_INDEX, keys.CACHE_INDEX, "arq:queue", "tts:queue2"):
                async with http.post(stack.base + "/admin/reset-queues", params={"queue": queue},
                                     headers=ADMIN) as resp:
                    body = await resp.json()
                    assert resp.status == 404 and body["code"] == "not_found", (queue, body)
                async with http.get(stack.base + "/admin/status", params={"queue": queue}, headers=ADMIN) as resp:
                    assert resp.status == 404, queue
            assert await r.zcard(keys.CLIENT_KEY_INDEX) == indexed == 1
        finally:
            await r.aclose()
        async with http.post(stack.base + "/admin/reset-queues", params={"queue": "tts:queue"}, headers=ADMIN) as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(stack.base + "/v1/catalog", headers={"xi-api-key": key}) as resp:
            assert resp.status == 200  # the key index survived


# ---- item 17: where a keyless gateway listens; weak secrets ---------------------------------------------------
async def test_keyless_gateway_binds_loopback_and_weak_secrets_stop_the_process(procs: Procs, redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "AUTH_DISABLED": "true", "GATEWAY_PORT": "0", "PROVIDERS": "local"}
    g = procs.start("loopback", "gateway", env)
    for _ in range(300):
        listening = [c.laddr for c in psutil.Process(g.pid).net_connections(kind="inet") if c.status == "LISTEN"]
        if listening:
            break
        await asyncio.sleep(0.1)
    assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
    child_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")}
    for name, weak in (("ADMIN_TOKEN", "changeme"), ("ADMIN_TOKEN", "a" * 40), ("TOKEN_SECRET", "hunter2")):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", env={**child_env, "REDIS_URL": redis_url, name: weak}, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = (b.decode() for b in await asyncio.wait_for(proc.communicate(), 60))
        assert proc.returncode != 0 and name in err and "too weak" in err, (name, err[-500:])
        assert weak not in err + out  # the message names the variable, never its value
