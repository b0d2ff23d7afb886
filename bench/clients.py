"""Benchmark clients: what a listener hears, measured per context.

Two wire dialects cover every target:

* :class:`NativeSession` speaks the gateway's native protocol (``/v1/ws``); the per-request proxy
  baseline (bench/proxy.py) speaks the same subset, so both are measured by the same code.
* :class:`ElevenLabsSession` speaks ElevenLabs' ``multi-stream-input`` over one warm socket: straight
  to the emulator it is the floor; pointed at the gateway's compatible endpoint it measures that path.

Each context records time to first audio (from the send of the message that makes audio due: the
whole utterance's ``start``, or a streamed turn's first ``flush``), every inter-chunk gap, and a
real-time playback clock started by the first chunk: a chunk *underruns* when it arrives more than
``jitter_ms`` after the audio before it has finished playing (playback then resumes from it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench import textgen

BYTES_PER_SECOND = 48_000  # pcm_24000: 16-bit mono
SAMPLE_RATE = 24_000
FORMAT = "pcm_24000"
MS_PER_CHAR = 60.0  # the emulator's default; bench/procs.py starts it with the same
MAX_KEPT_BYTES = 2_000_000  # ~40 s of audio per sampled context, at most
_AUDIO_HEAD = '{"audio": "'  # how the emulator's audio frames begin (json.dumps of its frame dict)


def parse_el_frame(data: str) -> tuple[dict[str, Any], str | None]:
    """An ElevenLabs server frame as (fields without ``audio``, base64 audio or None).

    The emulator's audio frames begin with the audio field, so its end is one ``find`` away and only
    the short rest is parsed as JSON: the loadgen never scans or decodes ~30 KB per chunk just to
    count bytes. Any other shape (the gateway's compatible endpoint, errors) is parsed whole.
    """
    if data.startswith(_AUDIO_HEAD):
        end = data.find('"', len(_AUDIO_HEAD))
        if end > 0 and data.startswith(", ", end + 1):
            return json.loads("{" + data[end + 3:]), data[len(_AUDIO_HEAD):end]
    ev = json.loads(data)
    audio = ev.pop("audio", None)
    return ev, audio if isinstance(audio, str) else None


def b64_len(b64: str) -> int:
    """Bytes a base64 string decodes to, without decoding it."""
    pad = 2 if b64.endswith("==") else 1 if b64.endswith("=") else 0
    return len(b64) // 4 * 3 - pad


@dataclass(slots=True)
class ContextRecord:
    """One context as a listener experienced it."""

    cid: str
    mode: str  # whole | stream | cache
    chars: int = 0
    origin: float | None = None  # when audio became due (start sent / first flush sent)
    first: float | None = None
    last: float | None = None
    play_start: float = 0.0
    played_s: float = 0.0
    chunks: int = 0
    audio_bytes: int = 0
    max_late_ms: float = -1e9
    underruns: int = 0
    gaps_ms: list[float] = field(default_factory=list)
    seq_ok: bool = True
    next_seq: int = 0
    final: bool = False
    error: str | None = None
    cached: bool | None = None
    # Content check on a sample of contexts: the text voiced, and the audio kept to decode it after the run.
    expected: str | None = None
    kept: list[bytes] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_audio(self, nbytes: int, jitter_s: float, seq: int | None = None) -> None:
        """Account one chunk against the playback clock."""
        now = time.perf_counter()
        if seq is not None:
            if seq != self.next_seq:
                self.seq_ok = False
            self.next_seq = seq + 1
        if self.first is None:
            self.first = now
            self.play_start = now
        else:
            self.gaps_ms.append((now - (self.last or now)) * 1000)
            late = now - (self.play_start + self.played_s)
            self.max_late_ms = max(self.max_late_ms, late * 1000)
            if late > jitter_s:
                self.underruns += 1
                self.play_start = now - self.played_s
        self.last = now
        self.played_s += nbytes / BYTES_PER_SECOND
        self.chunks += 1
        self.audio_bytes += nbytes

    def keep(self, audio: bytes) -> None:
        """Keep a sampled context's audio for the content check."""
        if self.kept is not None and sum(map(len, self.kept)) < MAX_KEPT_BYTES:
            self.kept.append(audio)

    def content_ok(self) -> bool | None:
        """None when not sampled; else whether the audio decodes to the text voiced (whitespace aside)."""
        if self.kept is None or self.expected is None or not self.final:
            return None
        from emulator.synth import decode_text  # only sampled contexts pay for numpy

        heard = decode_text(b"".join(self.kept), SAMPLE_RATE, MS_PER_CHAR)
        return heard.split() == self.expected.split()

    def finish(self, error: str | None = None) -> None:
        """The context ended (final or error)."""
        if self.done.is_set():
            self.seq_ok = False  # a second final/error for one context
            return
        self.error = error
        self.final = error is None
        self.done.set()

    def to_json(self) -> dict[str, Any]:
        """The record as the loadgen writes it."""
        ttfa = None if self.first is None or self.origin is None else (self.first - self.origin) * 1000
        return {"cid": self.cid, "mode": self.mode, "chars": self.chars, "ttfa_ms": ttfa,
                "chunks": self.chunks, "audio_s": self.audio_bytes / BYTES_PER_SECOND,
                "max_late_ms": self.max_late_ms if self.chunks > 1 else None,
                "underruns": self.underruns, "gaps_ms": [round(g, 2) for g in self.gaps_ms],
                "ok": self.final and self.error is None and self.chunks > 0, "error": self.error,
                "seq_ok": self.seq_ok, "cached": self.cached, "content_ok": self.content_ok()}


@dataclass
class Plan:
    """What one session says during the measured phase, drawn turn by turn from its own generator.

    Lazy: with a duration every session plans up to 1,000 turns and speaks a handful, and drawing them
    all up front cost the load generator more CPU than reading the audio.
    """

    rng: random.Random
    n: int
    stream_share: float
    cache_text: str | None
    token_rate: float  # tokens per second for streamed turns

    def __iter__(self) -> Iterator[tuple[str, Any, float]]:
        """``(mode, text | sentences, think seconds)`` per turn."""
        rng = self.rng
        for _ in range(self.n):
            if self.cache_text is not None:
                turn: tuple[str, Any] = ("cache", self.cache_text)
            elif rng.random() < self.stream_share:
                turn = ("stream", textgen.streamed_sentences(rng))
            else:
                turn = ("whole", textgen.utterance(rng))
            yield turn[0], turn[1], rng.uniform(0.1, 0.4)


def make_plan(rng: random.Random, n: int, stream_share: float, cache_text: str | None = None) -> Plan:
    """``n`` utterances, each streamed with probability ``stream_share`` (else whole), from a generator
    seeded by ``rng`` (so the turns do not depend on how many random draws speaking them takes)."""
    own = random.Random(rng.getrandbits(64))
    return Plan(own, n, stream_share, cache_text, own.uniform(20.0, 50.0))


class BaseSession:
    """One client connection running contexts one after another."""

    def __init__(self, http: aiohttp.ClientSession, url: str, name: str, jitter_s: float,
                 rng: random.Random, verify_share: float = 0.0) -> None:
        self.verify_share = verify_share
        self._verify_rng = random.Random(rng.random())  # sampling never shifts the texts' draws
        self.http = http
        self.url = url
        self.name = name
        self.jitter_s = jitter_s
        self.rng = rng
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.records: dict[str, ContextRecord] = {}
        self.reader: asyncio.Task[None] | None = None
        self.closed_reason: str | None = None
        self._n = 0

    async def connect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Close the socket and stop reading."""
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader

    def _new(self, mode: str) -> ContextRecord:
        self._n += 1
        rec = ContextRecord(f"{self.name}-{self._n}", mode)
        if self.verify_share and self._verify_rng.random() < self.verify_share:
            rec.kept = []
        self.records[rec.cid] = rec
        return rec

    async def _send(self, msg: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(msg))

    def _reader_died(self, why: str) -> None:
        self.closed_reason = why
        for rec in self.records.values():
            if not rec.done.is_set():
                rec.finish(f"socket_closed:{why}")

    async def run_context(self, mode: str, payload: Any, token_rate: float, timeout: float) -> ContextRecord:
        """Speak one utterance; returns when its final or error arrived (or the timeout)."""
        rec = self._new(mode)
        try:
            async with asyncio.timeout(timeout):
                if self.closed_reason is not None:
                    rec.finish(f"socket_closed:{self.closed_reason}")
                elif mode == "stream":
                    await self._stream(rec, payload, token_rate)
                else:
                    await self._whole(rec, payload, cache=(mode == "cache"))
                await rec.done.wait()
        except TimeoutError:
            if not rec.done.is_set():
                rec.finish("client_timeout")
        except (aiohttp.ClientError, ConnectionResetError, RuntimeError) as e:
            if not rec.done.is_set():
                rec.finish(f"send_failed:{type(e).__name__}")
        return rec

    async def _whole(self, rec: ContextRecord, text: str, cache: bool) -> None:
        raise NotImplementedError

    async def _stream(self, rec: ContextRecord, sentences: list[str], token_rate: float) -> None:
        raise NotImplementedError

    async def _tokens(self, rec: ContextRecord, sentences: list[str], token_rate: float, send: Any) -> None:
        """Send sentences token by token at ``token_rate`` (±30 % jitter), flushing at each sentence end."""
        rec.expected = " ".join(sentences)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for sentence in sentences:
            toks = textgen.tokens(sentence + " ", self.rng)
            for i, tok in enumerate(toks):
                flush = i == len(toks) - 1
                next_at += self.rng.uniform(0.7, 1.3) / token_rate
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if flush and rec.origin is None:
                    rec.origin = time.perf_counter()
                rec.chars += len(tok)
                await send(tok, flush)


class NativeSession(BaseSession):
    """The gateway's native protocol (and the per-request proxy, which speaks its subset)."""

    async def connect(self) -> None:
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0, autoping=True)
        hello = await self.ws.receive_json(timeout=30)
        if hello.get("type") != "session":
            raise RuntimeError(f"unexpected hello {hello}")
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        why = "closed"
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    data = msg.data
                    n = data[1]
                    seq = int.from_bytes(data[2:6], "big")
                    cid = data[6:6 + n].decode("ascii")
                    off = 6 + n + ((6 + n) & 1)
                    rec = self.records.get(cid)
                    if rec is not None:
                        rec.on_audio(len(data) - off, self.jitter_s, seq)
                        if rec.kept is not None:
                            rec.keep(data[off:])
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    ev = json.loads(msg.data)
                    kind = ev.get("type")
                    rec = self.records.get(ev.get("context_id") or "")
                    if kind == "final" and rec is not None:
                        if ev.get("chunks") is not None and ev["chunks"] != rec.chunks:
                            rec.seq_ok = False
                        rec.cached = ev.get("cached")
                        rec.finish(None if ev.get("reason") == "completed" else ev.get("reason"))
                    elif kind == "error":
                        if rec is not None:
                            rec.finish(ev.get("code", "error"))
                        else:
                            why = ev.get("code", "session_error")
                else:
                    break
        finally:
            self._reader_died(why)

    async def _whole(self, rec: ContextRecord, text: str, cache: bool) -> None:
        rec.chars = len(text)
        rec.expected = text
        msg = {"type": "start", "context_id": rec.cid, "format": FORMAT, "text": text, "end": True,
               "cache": cache}
        rec.origin = time.perf_counter()
        await self._send(msg)

    async def _stream(self, rec: ContextRecord, sentences: list[str], token_rate: float) -> None:
        await self._send({"type": "start", "context_id": rec.cid, "format": FORMAT, "cache": False})

        async def send(tok: str, flush: bool) -> None:
            await self._send({"type": "text", "context_id": rec.cid, "text": tok, "flush": flush})

        await self._tokens(rec, sentences, token_rate, send)
        await self._send({"type": "end", "context_id": rec.cid})


class ElevenLabsSession(BaseSession):
    """ElevenLabs ``multi-stream-input`` on one warm socket (the emulator itself, or the gateway's)."""

    async def connect(self) -> None:
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0, autoping=True,
                                             headers={"xi-api-key": "bench"})
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        why = "closed"
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                ev, audio = parse_el_frame(msg.data)
                rec = self.records.get(ev.get("contextId") or ev.get("context_id") or "")
                if rec is None:
                    if "error" in ev or "message" in ev:
                        why = str(ev.get("error") or ev.get("message"))[:60]
                    continue
                if audio:
                    rec.on_audio(b64_len(audio), self.jitter_s)
                    if rec.kept is not None:
                        rec.keep(base64.b64decode(audio))
                if ev.get("isFinal") is True:
                    rec.finish()
                elif "error" in ev:
                    rec.finish(str(ev["error"]))
        finally:
            self._reader_died(why)

    async def _whole(self, rec: ContextRecord, text: str, cache: bool) -> None:
        rec.chars = len(text)
        rec.expected = text
        await self._send({"text": " ", "context_id": rec.cid})
        rec.origin = time.perf_counter()
        await self._send({"text": text + " ", "context_id": rec.cid, "flush": True})
        await self._send({"context_id": rec.cid, "close_context": True})

    async def _stream(self, rec: ContextRecord, sentences: list[str], token_rate: float) -> None:
        await self._send({"text": " ", "context_id": rec.cid})

        async def send(tok: str, flush: bool) -> None:
            msg: dict[str, Any] = {"text": tok, "context_id": rec.cid}
            if flush:
                msg["flush"] = True
            await self._send(msg)

        await self._tokens(rec, sentences, token_rate, send)
        await self._send({"context_id": rec.cid, "close_context": True})
