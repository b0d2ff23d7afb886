"""Baseline (2), the seed's design: a proxy that dials a fresh upstream socket for every request.

``python -m bench.proxy --port N --upstream http://127.0.0.1:P``. Clients speak the native
protocol's subset the benchmark uses (``start`` with ``text``/``end``, ``text`` with ``flush``,
``end``; binary audio frames, ``final``/``error``); every context opens its own ElevenLabs
``stream-input`` socket at ``start`` (so a streamed turn overlaps the handshake with its first
tokens, the best this design can do), forwards text as it comes, base64-decodes the audio once and
sends it as native frames. No queue, no pool: exactly what the gateway replaces.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import struct
from typing import Any

import aiohttp
from aiohttp import web

VOICE = "21m00Tcm4TlvDq8ikWAM"
_HEAD = struct.Struct(">BBI")


class _Context:
    def __init__(self, cid: str, upstream_url: str, http: aiohttp.ClientSession,
                 client: web.WebSocketResponse, lock: asyncio.Lock) -> None:
        self.cid = cid
        self.cid_b = cid.encode("ascii")
        self.pad = b"\x00" if (6 + len(self.cid_b)) & 1 else b""
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.client = client
        self.lock = lock
        self.task = asyncio.create_task(self._run(upstream_url, http))

    async def _run(self, url: str, http: aiohttp.ClientSession) -> None:
        seq = 0
        try:
            async with http.ws_connect(url, headers={"xi-api-key": "bench"}, max_msg_size=0) as up:
                await up.send_str(json.dumps({"text": " "}))
                sender = asyncio.create_task(self._forward(up))
                try:
                    async for msg in up:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        ev = json.loads(msg.data)
                        if ev.get("audio"):
                            pcm = base64.b64decode(ev["audio"])
                            frame = b"".join((_HEAD.pack(1, len(self.cid_b), seq), self.cid_b, self.pad, pcm))
                            seq += 1
                            await self.client.send_bytes(frame)
                        if ev.get("isFinal"):
                            break
                        if "error" in ev:
                            raise RuntimeError(str(ev["error"]))
                finally:
                    sender.cancel()
            await self.client.send_str(json.dumps({"type": "final", "context_id": self.cid,
                                                   "reason": "completed", "chunks": seq}))
        except Exception as e:  # noqa: BLE001 - any failure ends the context with an error event
            with contextlib.suppress(Exception):
                await self.client.send_str(json.dumps({"type": "error", "context_id": self.cid,
                                                       "code": "upstream_error", "message": type(e).__name__}))

    async def _forward(self, up: aiohttp.ClientWebSocketResponse) -> None:
        while (item := await self.queue.get()) is not None:
            await up.send_str(json.dumps(item))
        await up.send_str(json.dumps({"text": ""}))


async def _session(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    await ws.send_str(json.dumps({"type": "session", "session_id": str(id(ws)), "protocol": 1}))
    contexts: dict[str, _Context] = {}
    lock = asyncio.Lock()
    try:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            cmd = json.loads(msg.data)
            kind, cid = cmd.get("type"), cmd.get("context_id", "")
            if kind == "start":
                fmt = cmd.get("format", "pcm_24000")
                url = f"{app['upstream']}/v1/text-to-speech/{VOICE}/stream-input?output_format={fmt}"
                ctx = contexts[cid] = _Context(cid, url, app["http"], ws, lock)
                if cmd.get("text"):
                    ctx.queue.put_nowait({"text": cmd["text"] + " ", "flush": True})
                if cmd.get("end"):
                    ctx.queue.put_nowait(None)
            elif kind == "text" and cid in contexts:
                item: dict[str, Any] = {"text": cmd.get("text", "")}
                if not item["text"]:
                    item["text"] = " "
                if cmd.get("flush"):
                    item["flush"] = True
                contexts[cid].queue.put_nowait(item)
            elif kind == "end" and cid in contexts:
                contexts[cid].queue.put_nowait(None)
    finally:
        for ctx in contexts.values():
            ctx.task.cancel()
    return ws


async def _http_ctx(app: web.Application) -> Any:
    app["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app["http"].close()


def main() -> None:
    """Serve until killed."""
    p = argparse.ArgumentParser(prog="python -m bench.proxy")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="emulator base URL, http://host:port")
    args = p.parse_args()
    app = web.Application()
    app["upstream"] = args.upstream.replace("http", "ws", 1).rstrip("/")
    app.cleanup_ctx.append(_http_ctx)
    app.router.add_get("/v1/ws", _session)
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    print(f"proxy listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main()
