"""Helpers for the ElevenLabs provider tests: an emulator on a real port, a provider pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from emulator.config import EmulatorConfig
from emulator.runner import DEFAULT_VOICE_ID, RunningEmulator, run_emulator
from emulator.synth import decode_text
from worker.providers.base import AudioChunk, SynthesisRequest, SynthesisStream
from worker.providers.elevenlabs import ElevenLabsProvider
from worker.upstream_permits import account_id

from shared.errors import TTSError
from shared.redis_client import create_redis
from shared.settings import Settings

VOICE = DEFAULT_VOICE_ID
_keys = itertools.count(1)


def el_settings(**overrides: Any) -> Settings:
    """Settings for a provider under test: default voice prewarmed, short deadlines."""
    base: dict[str, Any] = {
        "default_voice": VOICE, "elevenlabs_model": "eleven_flash_v2_5", "pool_min_sockets": 1,
        "pool_max_sockets": 4, "pool_contexts_per_socket": 5, "pool_keepalive_s": 5.0,
        "upstream_concurrency": 50, "upstream_slot_wait_s": 5.0, "upstream_first_audio_timeout_s": 3.0,
        "upstream_inactivity_timeout_s": 20, "log_format": "json",
        # Tests that hold permits with quiet contexts; the idle release has its own tests.
        "upstream_idle_release_s": 60.0,
    }
    base.update(overrides)
    return Settings.from_env({}, **base)


@contextlib.asynccontextmanager
async def emulator(**config: Any) -> AsyncIterator[RunningEmulator]:
    """An emulator on a free port (``config`` = EmulatorConfig fields)."""
    async with run_emulator(EmulatorConfig(**config)) as emu:
        yield emu


@contextlib.asynccontextmanager
async def provider(emu: RunningEmulator, redis_url: str | None = None,
                   **settings: Any) -> AsyncIterator[ElevenLabsProvider]:
    """A started provider pointed at ``emu``; closed (and every task awaited) on exit.

    With ``redis_url`` it has its own Redis client, as a worker runs it, and the account-wide
    upstream permits live there; without, only the per-worker limit applies.
    """
    client = create_redis(redis_url) if redis_url else None
    p = ElevenLabsProvider(el_settings(**settings), base_url=emu.http_url, redis=client)
    await p.start()
    try:
        yield p
    finally:
        await p.close()
        if client is not None:
            await client.aclose()


def account_of(emu: RunningEmulator) -> str:
    """The account id a provider pointed at ``emu`` keeps its permits under in Redis."""
    return account_id("elevenlabs", emu.http_url.rstrip("/").removesuffix("/v1"), None)


async def until(predicate: Callable[[], Any], timeout: float = 5.0, every: float = 0.01) -> None:
    """Until ``predicate()`` (a value, or an awaitable of one) is true; fails after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert loop.time() < deadline, "condition never held"
        await asyncio.sleep(every)


def request(voice: str = VOICE, fmt: str = "pcm_24000", key: str | None = None, **options: Any) -> SynthesisRequest:
    """A request with a fresh context key."""
    voice_settings = options.pop("voice_settings", {})
    return SynthesisRequest(key=key or f"ctx-{next(_keys)}", voice_id=voice, model_id="", output_format=fmt,
                            voice_settings=voice_settings, options=options)


@dataclass
class Outcome:
    """What a consumer saw: chunks and the error that ended iteration (None for a clean end)."""

    chunks: list[AudioChunk] = field(default_factory=list)
    error: TTSError | None = None
    first_audio_at: float | None = None

    @property
    def audio(self) -> bytes:
        """All audio bytes in order."""
        return b"".join(c.audio for c in self.chunks)

    def text(self, rate: int = 24000) -> str:
        """The text the emulator voiced into this audio."""
        return decode_text(self.audio, rate)


async def collect(stream: SynthesisStream) -> Outcome:
    """Iterate ``stream`` to its end."""
    out = Outcome()
    loop = asyncio.get_running_loop()
    try:
        async for chunk in stream:
            if out.first_audio_at is None:
                out.first_audio_at = loop.time()
            out.chunks.append(chunk)
    except TTSError as e:
        out.error = e
    return out


HOLD_TEXT = "Hold "  # under the emulator's first generation threshold: takes a permit, generates nothing


async def placed(stream: SynthesisStream, timeout: float = 15.0) -> None:
    """Until ``stream`` (an UpstreamContext that asked for placement) is on a socket; re-raise a refusal."""
    ctx: Any = stream
    deadline = asyncio.get_running_loop().time() + timeout
    while ctx.socket is None:
        if ctx.outcome == "failed":
            out = await collect(stream)
            assert out.error is not None
            raise out.error
        assert asyncio.get_running_loop().time() < deadline, "never placed"
        await asyncio.sleep(0.002)


async def held(p: ElevenLabsProvider, req: SynthesisRequest | None = None, text: str = HOLD_TEXT) -> SynthesisStream:
    """A context holding a permit and a slot: opened, sent ``text`` (no flush), placed."""
    stream = await p.open_stream(req or request())
    await stream.send_text(text)
    try:
        await placed(stream)
    except BaseException:
        await stream.cancel()
        raise
    return stream


async def speak(p: ElevenLabsProvider, text: str, *, req: SynthesisRequest | None = None,
                flush: bool = True) -> Outcome:
    """Open a context, send ``text``, end input, collect everything."""
    stream = await p.open_stream(req or request())
    try:
        await stream.send_text(text, flush=flush)
        await stream.end_input()
        return await collect(stream)
    finally:
        await stream.cancel()
