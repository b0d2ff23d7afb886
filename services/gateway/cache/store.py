"""The phrase cache: complete utterances (audio and alignment, frame by frame) in Redis.

Only whole utterances are cacheable: a context started with all its text and input closed, with
the client's ``cache`` flag on. A hit is replayed by the session as the very frames a miss
produced; a miss records its frames as they pass through the session and stores them when the
context completes (never after an error or a cancel). The cache never fails a context: when
Redis misbehaves it is a miss.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.cache.keying import digest
from gateway.cache.scripts import LOOKUP, STORE
from gateway.contexts import ContextRequest
from shared import keys, metrics
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)
ENTRY_VERSION = 1
Chunk = tuple[bytes, dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Hit:
    """A cached utterance: the frames a miss produced, in order."""

    chunks: list[Chunk]


@dataclass
class Recorder:
    """Frames of one missed context, kept until its final decides whether they are stored."""

    cache: PhraseCache
    digest: str
    max_bytes: int
    chunks: list[Chunk] = field(default_factory=list)
    size: int = 0
    overflow: bool = False

    def add(self, audio: bytes, alignment: dict[str, Any] | None) -> None:
        """One frame, in order."""
        if self.overflow:
            return
        self.size += len(audio)
        if self.size > self.max_bytes:
            self.overflow, self.chunks = True, []  # too long to cache: stop holding it
            return
        self.chunks.append((audio, alignment))

    def finish(self, chunks_out: int, fmt: str) -> None:
        """The context completed after ``chunks_out`` frames: store it if every one was recorded."""
        if not self.overflow and self.chunks and len(self.chunks) == chunks_out:
            self.cache.store_soon(self.digest, self.chunks, fmt)


class PhraseCache:
    """Lookup (with LRU touch) and background store with size-capped eviction."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self._redis = redis
        self._ttl_ms = int(settings.cache_ttl_s * 1000)
        self._max_bytes = settings.cache_max_bytes
        self._max_entry = min(settings.cache_max_entry_bytes, settings.cache_max_bytes)
        # None: every tenant's entries are its own (the default; see keying.namespace).
        self._shared_voices = (frozenset(settings.elevenlabs_voices) if settings.cache_share_across_tenants
                               else None)
        self._lookup = redis.register_script(LOOKUP)
        self._store = redis.register_script(STORE)
        self._storing: set[asyncio.Task[bool]] = set()

    @staticmethod
    def cacheable(request: ContextRequest) -> bool:
        """A whole utterance the client did not opt out of."""
        return request.use_cache and request.input_closed and bool(request.text.strip())

    def key_of(self, request: ContextRequest, tenant: str) -> str:
        """The request's cache digest."""
        return digest(request, tenant, self._shared_voices)

    async def lookup(self, request: ContextRequest, tenant: str) -> Hit | Recorder | None:
        """The cached frames of the request's utterance, or on a miss a recorder for its frames.

        None: not cacheable, or the cache misbehaved (it never fails a context).
        """
        if not self.cacheable(request):
            metrics.CACHE_REQUESTS.labels("bypass").inc()
            return None
        d = self.key_of(request, tenant)
        try:
            raw = await self._lookup(keys=[keys.cache_entry(d), keys.CACHE_INDEX], args=[time.time(), d])
        except (RedisError, OSError) as e:
            log.warning("cache_lookup_failed", error=type(e).__name__)
            metrics.CACHE_REQUESTS.labels("error").inc()
            return None
        chunks = _decode(raw, request.fmt.name) if raw is not None else None
        if chunks is None:
            metrics.CACHE_REQUESTS.labels("miss").inc()
            return Recorder(self, d, self._max_entry)
        metrics.CACHE_REQUESTS.labels("hit").inc()
        metrics.CACHE_BYTES.labels("served").inc(sum(len(a) for a, _ in chunks))
        return Hit(chunks)

    def store_soon(self, d: str, chunks: list[Chunk], fmt: str) -> None:
        """Store in the background: the client already has its final."""
        task = asyncio.get_running_loop().create_task(self.store(d, chunks, fmt))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def store(self, d: str, chunks: list[Chunk], fmt: str) -> bool:
        """Store one utterance, evicting least recently used entries to stay under the cap."""
        blob = msgpack.packb({"v": ENTRY_VERSION, "format": fmt, "chunks": [[a, al] for a, al in chunks]},
                             use_bin_type=True)
        if len(blob) > self._max_entry:
            return False
        try:
            stored, evicted, evicted_bytes = await self._store(
                keys=[keys.cache_entry(d), keys.CACHE_INDEX, keys.CACHE_EXPIRY, keys.CACHE_SIZES,
                      keys.CACHE_BYTES],
                args=[d, blob, self._ttl_ms, time.time(), self._max_bytes, keys.CACHE_PREFIX])
        except (RedisError, OSError) as e:
            log.warning("cache_store_failed", error=type(e).__name__)
            return False
        if stored:
            metrics.CACHE_BYTES.labels("stored").inc(len(blob))
        if evicted:
            metrics.CACHE_BYTES.labels("evicted").inc(int(evicted_bytes))
            metrics.CACHE_EVICTIONS.inc(int(evicted))
        return bool(stored)

    async def close(self) -> None:
        """Let stores in flight finish (shutdown)."""
        if self._storing:
            await asyncio.wait(list(self._storing), timeout=5)


def _decode(raw: bytes, fmt: str) -> list[Chunk] | None:
    try:
        entry = msgpack.unpackb(raw, raw=False)
        if entry.get("v") != ENTRY_VERSION or entry.get("format") != fmt:
            return None
        return [(bytes(a), al) for a, al in entry["chunks"]]
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None  # an unreadable entry is a miss; the next store replaces it
