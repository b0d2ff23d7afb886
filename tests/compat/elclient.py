"""A raw ElevenLabs-protocol WebSocket client (aiohttp) that records every frame per context."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

VOICE = "joe"


@dataclass
class Ctx:
    """What the client saw for one context id."""

    chunks: list[bytes] = field(default_factory=list)
    alignments: list[dict[str, Any] | None] = field(default_factory=list)
    finals: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    frames_after_final: int = 0

    @property
    def audio(self) -> bytes:
        """All audio in arrival order."""
        return b"".join(self.chunks)

    @property
    def chars(self) -> str:
        """Characters of every alignment, in order."""
        return "".join("".join(a["chars"]) for a in self.alignments if a)


class ElClient:
    """Sends ElevenLabs client messages; ``pump_until`` records server frames by ``contextId``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ctx: dict[str | None, Ctx] = {}
        self.socket_errors: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, base_url: str, http: aiohttp.ClientSession, *, multi: bool = True, voice: str = VOICE,
                      headers: dict[str, str] | None = None, **query: Any) -> AsyncIterator[ElClient]:
        path = "multi-stream-input" if multi else "stream-input"
        q = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in query.items()}
        url = f"{base_url.replace('http', 'ws', 1)}/v1/text-to-speech/{voice}/{path}"
        if q:
            url += "?" + urlencode(q)
        async with http.ws_connect(url, headers=headers or {}, max_msg_size=16 << 20) as ws:
            yield cls(ws)

    async def send(self, **msg: Any) -> None:
        """One JSON message."""
        await self.ws.send_str(json.dumps(msg))

    def get(self, cid: str | None) -> Ctx:
        """The record of a context id (None: frames without contextId)."""
        return self.ctx.setdefault(cid, Ctx())

    def handle(self, msg: aiohttp.WSMessage) -> None:
        """Record one frame."""
        if msg.type != aiohttp.WSMsgType.TEXT:
            return
        data = json.loads(msg.data)
        self.frames.append(data)
        cid = data.get("contextId")
        rec = self.get(cid)
        if "error" in data or "message" in data:
            if cid is None:
                self.socket_errors.append(data)
            else:
                rec.errors.append(data)
            return
        if rec.finals:
            rec.frames_after_final += 1
        if data.get("audio"):
            rec.chunks.append(base64.b64decode(data["audio"]))
            rec.alignments.append(data.get("normalizedAlignment"))
        if data.get("isFinal"):
            rec.finals += 1

    def final(self, cid: str | None) -> bool:
        """The context got its isFinal."""
        return self.get(cid).finals > 0

    async def pump_until(self, done: Callable[[ElClient], bool], timeout: float = 30.0) -> None:
        """Read frames until ``done(self)``, or the socket closes."""
        async with asyncio.timeout(timeout):
            while not done(self):
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    self.close_code = self.ws.close_code
                    return
                self.handle(msg)

    async def drain_until_closed(self, timeout: float = 30.0) -> int | None:
        """Read until the server closes; return its close code."""
        await self.pump_until(lambda c: False, timeout)
        return self.close_code

    async def quiet_for(self, seconds: float) -> None:
        """Read whatever arrives for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await self.pump_until(lambda c: False, seconds)
