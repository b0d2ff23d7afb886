"""Building blocks of the fault suite: the whole stack as processes, a raw WebSocket, figures, Redis checks.

Every test here runs gateway, workers and the ElevenLabs emulator as separate processes
(tests/support/procs.py), against a real redis-server, over real sockets. Long mode
(``TTS_TEST_LONG=1``, ``make test-long``) changes only sizes (fuzz cases, soak length), never which tests run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as aioredis
from emulator.runner import DEFAULT_VOICE_ID
from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import ROOT, Proc, Procs

T = TypeVar("T")
LONG = os.environ.get("TTS_TEST_LONG", "") not in ("", "0", "false")
VOICE = DEFAULT_VOICE_ID
# Distinctive fake secrets: any appearance in a log, body or metric is a leak, never a coincidence.
UPSTREAM_KEY = "sk_fake_upstream_Qx7TT3vJ9mPz"
ADMIN_TOKEN = "adm_fake_token_Wd8LkR2yH5nB"


def pick(quick: T, long: T) -> T:
    """The quick-mode or the long-mode value of a size parameter."""
    return long if LONG else quick


REPORT = Path(os.environ.get("TTS_RELIABILITY_OUT", ROOT / "tests" / "artifacts" / "reliability.jsonl"))


def report(scenario: str, **figures: Any) -> None:
    """Record a measured figure: printed (``-s`` shows it) and appended to tests/artifacts/reliability.jsonl.

    docs/reliability.md quotes these lines; ``TTS_RELIABILITY_OUT`` sends them elsewhere.
    """
    line = json.dumps({"scenario": scenario, "long": LONG, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures},
                      default=str)
    print(f"RELIABILITY {line}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with REPORT.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


def el_env(emulator: Proc, **overrides: Any) -> dict[str, Any]:
    """Service settings for the ElevenLabs provider pointed at the emulator process."""
    env: dict[str, Any] = {
        "PROVIDERS": "elevenlabs", "ELEVENLABS_BASE_URL": emulator.base_url, "ELEVENLABS_API_KEY": UPSTREAM_KEY,
        "ELEVENLABS_VOICES": VOICE, "DEFAULT_VOICE": VOICE, "POOL_MIN_SOCKETS": 1, "POOL_MAX_SOCKETS": 16,
        "UPSTREAM_CONCURRENCY": 1000, "CACHE_ENABLED": False, "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    env.update(overrides)
    return env


@dataclass
class Stack:
    """Emulator, workers and gateways, each its own process, on one Redis."""

    procs: Procs
    redis_url: str
    emulator: Proc
    workers: list[Proc] = field(default_factory=list)
    gateways: list[Proc] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)

    @property
    def gateway(self) -> Proc:
        """The first gateway."""
        return self.gateways[0]

    @property
    def base(self) -> str:
        """The first gateway's base URL."""
        return self.gateway.base_url

    def add_worker(self, name: str | None = None, **env: Any) -> Proc:
        """Start one more worker (call ``ready`` on it)."""
        w = self.procs.worker(self.redis_url, name=name or f"worker{len(self.workers)}", **{**self.env, **env})
        self.workers.append(w)
        return w

    def add_gateway(self, name: str | None = None, **env: Any) -> Proc:
        """Start one more gateway (call ``ready`` on it)."""
        g = self.procs.gateway(self.redis_url, name=name or f"gateway{len(self.gateways)}", **{**self.env, **env})
        self.gateways.append(g)
        return g

    async def emu_config(self, **changes: Any) -> dict[str, Any]:
        """Change the emulator's config at runtime (``POST /_emulator/config``)."""
        async with aiohttp.ClientSession() as http, \
                http.post(self.emulator.base_url + "/_emulator/config", json=changes) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            return dict(body)

    async def emu_stats(self) -> dict[str, Any]:
        """The emulator's live counters."""
        async with aiohttp.ClientSession() as http, http.get(self.emulator.base_url + "/_emulator/stats") as resp:
            return dict(await resp.json())

    async def emu_idle(self) -> bool:
        """No upstream context is open at the emulator."""
        return (await self.emu_stats())["contexts_active"] == 0


async def start_stack(procs: Procs, redis_url: str, *, workers: int = 1, gateways: int = 1,
                      emulator: Mapping[str, Any] | None = None, worker_env: Mapping[str, Any] | None = None,
                      gateway_env: Mapping[str, Any] | None = None, **env: Any) -> Stack:
    """Start the emulator, then ``workers`` workers and ``gateways`` gateways, and wait until all are ready."""
    emu = procs.emulator(**(emulator or {}))
    await procs.ready(emu)
    stack = Stack(procs, redis_url, emu, env=el_env(emu, **env))
    for _ in range(workers):
        stack.add_worker(**(worker_env or {}))
    for _ in range(gateways):
        stack.add_gateway(**(gateway_env or {}))
    await procs.ready(*stack.workers, *stack.gateways)
    return stack


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.05) -> float:
    """Poll an async predicate until true; returns the seconds it took, fails naming ``what``."""
    t0 = time.monotonic()
    while not await predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(every)
    return time.monotonic() - t0


async def metric(proc: Proc, name: str, **labels: str) -> float:
    """Sum of one Prometheus sample (all label sets matching ``labels``) from a process's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(proc.base_url + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


ARQ_JOB_PATTERNS = ("arq:job:*", "arq:in-progress:*", "arq:retry:*", "arq:result:*")


async def leftovers(redis_url: str, queue: str = "tts:queue") -> dict[str, Any]:
    """Work Redis still holds: queued job ids, arq job keys, job input lists. Empty when nothing is orphaned."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        found: dict[str, Any] = {}
        queued = await r.zcard(queue)
        if queued:
            found[queue] = queued
        for pattern in (*ARQ_JOB_PATTERNS, "tts:input:*"):
            keys = [k async for k in r.scan_iter(match=pattern, count=1000)]
            if keys:
                found[pattern] = len(keys)
        return found
    finally:
        await r.aclose()


async def assert_no_orphans(redis_url: str, timeout: float = 5.0) -> None:
    """The queue holds no work once every context ended (a finishing job may need a moment)."""
    last: dict[str, Any] = {}

    async def clean() -> bool:
        nonlocal last
        last = await leftovers(redis_url)
        return not last

    try:
        await until(clean, timeout, "queue clean")
    except AssertionError:
        raise AssertionError(f"orphaned work left in Redis: {last}") from None


# ---- a WebSocket client that does exactly what it is told, no more ---------------------------------------
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class _DeliveredFirstReader(asyncio.StreamReader):
    """A reader that hands out what the kernel already delivered before a connection error.

    asyncio's reader raises a stored error (EPIPE after the server hung up while we still wrote) ahead
    of bytes already buffered, so the server's error and close frames would look lost when they were not.
    """

    _late: BaseException | None = None

    def set_exception(self, exc: BaseException) -> None:
        self._late = exc
        self.feed_eof()

    async def readexactly(self, n: int) -> bytes:
        try:
            return await super().readexactly(n)
        except asyncio.IncompleteReadError:
            if self._late is not None:
                raise self._late from None
            raise


class RawWS:
    """A hand-rolled WebSocket client: sends any frame (even invalid), reads only when asked.

    aiohttp's client reads (and answers pings) on its own; a client that must *stop reading*, or send
    a text frame that is not UTF-8, needs a socket it controls.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int,
                 headers: dict[str, str]) -> None:
        self.reader = reader
        self.writer = writer
        self.status = status
        self.headers = headers

    @classmethod
    async def connect(cls, base_url: str, path: str = "/v1/ws", *, rcvbuf: int | None = None,
                      headers: Mapping[str, str] | None = None) -> RawWS:
        """Open the TCP connection and do the upgrade; ``status`` is the HTTP answer (101 on success)."""
        host, port = base_url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window never grows past it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (host, int(port)))
        reader = _DeliveredFirstReader(limit=1 << 22, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.create_connection(lambda: protocol, sock=sock)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        return cls(reader, writer, status, hdrs)

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        """Queue one masked frame (no validation: that is the point); a no-op once the peer hung up."""
        if self.writer.transport.is_closing():
            raise ConnectionResetError("the server closed the connection")
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big") \
            if n else b""
        self.writer.write(head + mask + masked)

    def send_text(self, text: str | bytes) -> None:
        """A text frame (bytes are sent as they are, valid UTF-8 or not)."""
        self.send_frame(OP_TEXT, text if isinstance(text, bytes) else text.encode())

    def send_json(self, **msg: Any) -> None:
        """A JSON text frame."""
        self.send_text(json.dumps(msg))

    async def drain(self) -> None:
        """Wait until the kernel took what was queued."""
        await self.writer.drain()

    async def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame; IncompleteReadError at EOF."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def read_until_close(self, timeout: float) -> tuple[list[dict[str, Any]], int, int | None]:
        """Read to the close frame (or EOF): (JSON events, binary frame count, close code or None)."""
        events: list[dict[str, Any]] = []
        binary = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    op, data = await self.read_frame()
                    if op == OP_TEXT:
                        events.append(json.loads(data))
                    elif op == OP_BINARY:
                        binary += 1
                    elif op == OP_CLOSE:
                        code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
                        return events, binary, code
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        return events, binary, None

    def close(self) -> None:
        """Drop the TCP connection (no close handshake)."""
        self.writer.close()

    def abort(self) -> None:
        """Reset the TCP connection."""
        self.writer.transport.abort()
