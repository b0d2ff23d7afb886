"""Small client-side helpers for reading the emulator's WebSocket frames in tests."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Received:
    """Everything one socket delivered until it closed (or the wait ended)."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    raw_text: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    closed: bool = False

    def audio(self, context_id: str | None = None) -> bytes:
        """Concatenated audio, optionally of one context only."""
        return b"".join(
            base64.b64decode(f["audio"])
            for f in self.frames
            if f.get("audio") and (context_id is None or f.get("contextId") == context_id)
        )

    def audio_frames(self, context_id: str | None = None) -> list[dict[str, Any]]:
        """Frames that carry audio."""
        return [
            f
            for f in self.frames
            if f.get("audio") and (context_id is None or f.get("contextId") == context_id)
        ]

    def finals(self) -> list[str | None]:
        """contextId of every final frame, in order."""
        return [f.get("contextId") for f in self.frames if f.get("isFinal") is True]

    def errors(self) -> list[dict[str, Any]]:
        """Error frames."""
        return [f for f in self.frames if "error" in f]


async def read(
    ws: aiohttp.ClientWebSocketResponse,
    into: Received | None = None,
    *,
    finals: set[str] | None = None,
    timeout: float = 3.0,
) -> Received:
    """Read frames until the socket closes, every id in ``finals`` got its final, or ``timeout`` passes."""
    got = into or Received()
    pending = set(finals or ())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return got
        try:
            msg = await ws.receive(timeout=remaining)
        except TimeoutError:
            return got
        if msg.type is aiohttp.WSMsgType.TEXT:
            got.raw_text.append(msg.data)
            try:
                frame = json.loads(msg.data)
            except ValueError:
                continue
            got.frames.append(frame)
            if frame.get("isFinal") is True and frame.get("contextId") in pending:
                pending.discard(frame["contextId"])
                if finals and not pending:
                    return got
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            got.closed = True
            # The code in the close frame itself; ws.close_code may already say 1006 if the reply failed.
            got.close_code = msg.data if msg.type is aiohttp.WSMsgType.CLOSE else ws.close_code
            got.close_reason = msg.extra if isinstance(msg.extra, str) else None
            return got
        elif msg.type is aiohttp.WSMsgType.ERROR:
            got.closed = True
            got.close_code = ws.close_code
            return got
