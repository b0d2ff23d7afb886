"""What one hostile or careless socket can hold, on real processes: keyless sockets that never
speak, keys revoked under open sockets, and ids refused by the thousand on one socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import psutil

from tests.faults.support import ADMIN_TOKEN, VOICE, report, start_stack
from tests.support.procs import Procs
from tests.support.stack import NativeClient
from tests.support.timing import LOAD_MARGIN_S

AUTH_TIMEOUT_S = 1.0


def ws_url(base: str, multi: bool = True, **query: str) -> str:
    path = "multi-stream-input" if multi else "stream-input"
    q = "&".join(f"{k}={v}" for k, v in {"output_format": "pcm_16000", **query}.items())
    return f"{base.replace('http', 'ws', 1)}/v1/text-to-speech/{VOICE}/{path}?{q}"


async def new_key(http: aiohttp.ClientSession, base: str) -> tuple[str, str]:
    """(plaintext, id) of a fresh client key."""
    async with http.post(base + "/admin/keys", json={"name": "limits"},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
        body = await r.json()
        assert r.status == 201, body
        return str(body["key"]), str(body["id"])


async def _until_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                if "audio" not in data or data.get("audio") is None:
                    frames.append(data)
    return frames


async def test_keyless_sockets_that_never_speak_are_closed_at_one_deadline(procs: Procs, redis_url: str) -> None:
    stack = await start_stack(procs, redis_url, AUTH_DISABLED=False, WS_AUTH_TIMEOUT_S=AUTH_TIMEOUT_S)
    n = 200
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        # Idle sockets (the client answers the gateway's heartbeat pings) and one that pings the gateway
        # every 0.2 s: each ping used to restart the 20 s first-message timeout, for ever.
        sockets = [await http.ws_connect(ws_url(stack.base, multi=i % 2 == 0)) for i in range(n)]
        pinger = await http.ws_connect(ws_url(stack.base))
        t0 = time.monotonic()

        async def ping_forever() -> None:
            while not pinger.closed:
                await pinger.ping()
                await asyncio.sleep(0.2)

        pinging = asyncio.create_task(ping_forever())
        results = await asyncio.gather(*(_until_closed(ws, 15) for ws in [*sockets, pinger]))
        closed_after = time.monotonic() - t0
        pinging.cancel()
        await asyncio.gather(pinging, return_exceptions=True)
        codes = {ws.close_code for ws in [*sockets, pinger]}
        # The native socket has no keyless phase: it authenticates before the upgrade.
        async with http.get(stack.base + "/v1/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                                            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                                            "Sec-WebSocket-Version": "13"}) as r:
            native_status = r.status
    report("keyless_sockets_deadline", sockets=n + 1, closed_after_s=round(closed_after, 2),
           deadline_s=AUTH_TIMEOUT_S)
    assert codes == {1008}
    assert all(frames and frames[-1]["error"] == "unauthorized" and "API key" in frames[-1]["message"]
               for frames in results)
    assert closed_after < 10  # one deadline (1 s) plus a loaded box's margin, not 20 s restarted at each ping
    assert native_status == 401


async def test_open_sockets_of_a_revoked_key_are_closed(procs: Procs, redis_url: str) -> None:
    stack = await start_stack(procs, redis_url, emulator={"realtime_factor": 1.0, "chunk_ms": 200},
                              AUTH_DISABLED=False, REVOCATION_CHECK_S=0.5)
    long_text = "A long answer that is still being spoken when the key behind it is revoked by the operator."
    async with aiohttp.ClientSession() as http:
        key, key_id = await new_key(http, stack.base)
        other_key, _ = await new_key(http, stack.base)
        el = await http.ws_connect(ws_url(stack.base), headers={"xi-api-key": key})
        other = await http.ws_connect(ws_url(stack.base), headers={"xi-api-key": other_key})
        for ws in (el, other):
            await ws.send_json({"text": long_text, "context_id": "c", "flush": True})
            first = await ws.receive_json(timeout=10)
            assert first.get("audio"), first
        async with NativeClient.connect(stack.base, http, headers={"xi-api-key": key}) as native:
            await native.send(type="start", context_id="n", voice=VOICE, text=long_text, format="pcm_16000", flush=True)
            await native.pump_until(lambda c: bool(c.result("n").frames), timeout=10)
            t0 = time.monotonic()
            async with http.delete(f"{stack.base}/admin/keys/{key_id}",
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                assert r.status == 200, await r.text()
            el_frames, _ = await asyncio.gather(_until_closed(el, 10),
                                                native.pump_until(lambda c: False, timeout=10))
            closed_after = time.monotonic() - t0
            native_code = native.ws.close_code
        # The other tenant's socket is untouched and its turn completes.
        rest = await _until_closed_or_final(other, "c", 30)
        async with http.ws_connect(ws_url(stack.base), headers={"xi-api-key": key}) as again:
            refused = await _until_closed(again, 10)
    report("revoked_key_sockets", closed_after_s=round(closed_after, 2), check_s=0.5)
    assert native_code == 4401 and native.session_errors[-1]["code"] == "unauthorized"
    assert el.close_code == 1008 and el_frames[-1]["error"] == "unauthorized"
    assert closed_after < 0.5 + LOAD_MARGIN_S  # one REVOCATION_CHECK_S pass
    assert rest and rest[-1].get("isFinal") is True and not other.closed
    assert refused[-1]["error"] == "unauthorized"


async def _until_closed_or_final(ws: aiohttp.ClientWebSocketResponse, cid: str,
                                 timeout: float) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async for msg in ws:
            data = json.loads(msg.data)
            frames.append(data)
            if data.get("isFinal") and data.get("contextId") == cid:
                break
    return frames


async def test_refused_contexts_do_not_grow_the_gateway(procs: Procs, redis_url: str) -> None:
    stack = await start_stack(procs, redis_url, emulator={"realtime_factor": 1.0},
                              COMPAT_MAX_CONTEXTS_PER_SOCKET=1)
    gateway = psutil.Process(stack.gateway.pid)
    n, batch = 40_000, 2_000
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(stack.base), max_msg_size=0) as ws:
        await ws.send_json({"text": "Holding the only slot of this socket for a long while, on purpose.",
                            "context_id": "live", "flush": True})
        errors = 0

        async def refuse(start: int) -> None:
            nonlocal errors
            for i in range(start, start + batch):
                await ws.send_str(json.dumps({"text": "refused", "context_id": f"refused-{i}"}))
            while errors < start + batch:
                data = json.loads((await ws.receive(timeout=30)).data)
                errors += data.get("error") == "too_many_contexts"

        await refuse(0)  # warm-up: allocator pools, first-use imports
        rss_warm = gateway.memory_info().rss / 2**20
        for start in range(batch, n, batch):
            await refuse(start)
        rss_after = gateway.memory_info().rss / 2**20
    report("refused_contexts_rss", refused=n, rss_warm_mb=round(rss_warm, 1), rss_after_mb=round(rss_after, 1))
    assert errors == n
    # Unbounded, each refused id cost ~0.4 KB (100,000 grew RSS by 40 MB): 38,000 more would be ~15 MB.
    assert rss_after - rss_warm < 6, (rss_warm, rss_after)
