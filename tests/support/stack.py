"""In-process building blocks for tests: a real arq worker task, a gateway on a real port, clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from gateway.app import create_app
from gateway.native.frames import decode_audio_frame
from worker.app import build_worker
from worker.health import start_health_server
from worker.providers.base import Provider
from worker.runner import WakeableWorker

from shared.settings import Settings


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, providers: dict[str, Provider] | None = None,
                         worker_id: str | None = None) -> AsyncIterator[WakeableWorker]:
    """A real arq worker consuming the queue from a task in this event loop."""
    worker = build_worker(settings, providers, handle_signals=False, worker_id=worker_id)
    task = asyncio.create_task(worker.async_run())
    # Ready once its startup hook ran and it is heartbeating.
    for _ in range(500):
        if "heartbeat_task" in worker.ctx or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()


@contextlib.asynccontextmanager
async def worker_http(worker: WakeableWorker) -> AsyncIterator[str]:
    """The worker's own HTTP port (/metrics, /healthz, /readyz) on a free 127.0.0.1 port; yields its base URL."""
    runner = await start_health_server(worker, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[str]:
    """The gateway app served on a free 127.0.0.1 port; yields its base URL."""
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass
class ContextResult:
    """Everything a client saw for one context."""

    context_id: str
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    started: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def audio(self) -> bytes:
        """The context's audio in order."""
        return b"".join(a for _, a in sorted(self.frames))

    @property
    def seqs(self) -> list[int]:
        """Sequence numbers in arrival order."""
        return [s for s, _ in self.frames]


class NativeClient:
    """A native-protocol client over a real WebSocket, collecting frames per context."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.session_id: str | None = None
        self.results: dict[str, ContextResult] = {}
        self.session_errors: list[dict[str, Any]] = []
        self.other: list[dict[str, Any]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, base_url: str, http: aiohttp.ClientSession, path: str = "/v1/ws",
                      **kw: Any) -> AsyncIterator[NativeClient]:
        async with http.ws_connect(base_url.replace("http", "ws", 1) + path, max_msg_size=0, **kw) as ws:
            client = cls(ws)
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "session", hello
            client.session_id = hello["session_id"]
            yield client

    async def send(self, **msg: Any) -> None:
        """Send one JSON message."""
        await self.ws.send_str(json.dumps(msg))

    def result(self, cid: str) -> ContextResult:
        """The record for a context."""
        return self.results.setdefault(cid, ContextResult(cid))

    async def pump_until(self, done: Any, timeout: float = 20.0) -> None:
        """Read frames until ``done(self)`` is true."""
        async with asyncio.timeout(timeout):
            while not done(self):
                msg = await self.ws.receive()
                self.handle(msg)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    return

    def handle(self, msg: aiohttp.WSMessage) -> None:
        """Record one received frame."""
        if msg.type == aiohttp.WSMsgType.BINARY:
            cid, seq, audio = decode_audio_frame(msg.data)
            self.result(cid).frames.append((seq, audio))
        elif msg.type == aiohttp.WSMsgType.TEXT:
            ev = json.loads(msg.data)
            cid = ev.get("context_id")
            if ev["type"] == "started":
                self.result(cid).started = ev
            elif ev["type"] == "final":
                self.result(cid).final = ev
            elif ev["type"] == "error" and cid:
                self.result(cid).error = ev
            elif ev["type"] == "error":
                self.session_errors.append(ev)
            else:
                self.other.append(ev)
            if cid:
                self.result(cid).events.append(ev)

    def ended(self, cid: str) -> bool:
        """The context got its final or error."""
        r = self.results.get(cid)
        return r is not None and (r.final is not None or r.error is not None)

    async def speak(self, cid: str, text: str, timeout: float = 20.0, **start: Any) -> ContextResult:
        """Whole-utterance synthesis: start with all text and end, wait for the final."""
        await self.send(type="start", context_id=cid, text=text, end=True, **start)
        await self.pump_until(lambda c: c.ended(cid), timeout)
        return self.result(cid)
