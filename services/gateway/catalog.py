"""The voice catalogue and live workers, as the workers themselves advertise them in their heartbeats."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from shared import keys
from shared.errors import NoWorkers, ProtocolError, UnknownVoice
from shared.logging import get_logger
from shared.protocol import WorkerHeartbeat, decode_worker_heartbeat

log = get_logger(__name__)
# Catalogue reads are cheap but not free; one scan a second per gateway is plenty.
CACHE_S = 1.0
# Unreadable heartbeats are logged once per worker id; the memory of which were is bounded.
_WARNED_MAX = 1000


@dataclass
class WorkerInfo:
    """One live worker as its last heartbeat described it."""

    worker_id: str
    heartbeat: WorkerHeartbeat

    @property
    def providers(self) -> list[str]:
        """Names of the providers it runs."""
        return list(self.heartbeat.providers)

    @property
    def draining(self) -> bool:
        """It finishes what it has and takes nothing new."""
        return self.heartbeat.draining


@dataclass
class Snapshot:
    """Live workers and the voices they offer, at one moment."""

    workers: list[WorkerInfo] = field(default_factory=list)
    voices: dict[str, dict[str, Any]] = field(default_factory=dict)
    at: float = 0.0

    @property
    def providers(self) -> set[str]:
        """Every provider some live (non-draining) worker runs."""
        return {p for w in self.workers if not w.draining for p in w.providers}


class Catalog:
    """Resolves voices to providers from live workers' heartbeats."""

    def __init__(self, redis: aioredis.Redis, default_voice: str = "") -> None:
        self._redis = redis
        self._default_voice = default_voice
        self._snap = Snapshot()
        self._warned: set[str] = set()
        self._refreshing: asyncio.Task[Snapshot] | None = None

    async def snapshot(self, max_age: float = CACHE_S) -> Snapshot:
        """Live workers and voices, refreshed when older than ``max_age``.

        Concurrent callers share one refresh: each start resolves its voice here, and when the snapshot
        expired under load every start arriving during the scan used to run a scan of its own (the whole
        keyspace, in COUNT-sized round trips), 8 % of the gateway's samples at 1,000 streams.
        """
        if time.monotonic() - self._snap.at < max_age:
            return self._snap
        task = self._refreshing
        if task is None:
            task = self._refreshing = asyncio.get_running_loop().create_task(self._refresh(),
                                                                            name="catalog-refresh")
            task.add_done_callback(self._refreshed)
        # One caller's cancellation (its client left) must not cancel the refresh the others wait on.
        return await asyncio.shield(task)

    def _refreshed(self, task: asyncio.Task[Snapshot]) -> None:
        if self._refreshing is task:
            self._refreshing = None
        if not task.cancelled():
            task.exception()  # every waiter may have left: the error is theirs to hear, not the loop's

    async def _refresh(self) -> Snapshot:
        found: list[bytes] = [k async for k in self._redis.scan_iter(match=keys.WORKER_HEARTBEAT_PATTERN,
                                                                      count=500)]
        values = await self._redis.mget(found) if found else []
        snap = Snapshot(at=time.monotonic())
        for key, raw in zip(found, values):
            if raw is None:
                continue
            worker_id = keys.worker_id_from_key(key.decode())
            try:
                beat = decode_worker_heartbeat(raw)
            except ProtocolError as e:
                self._warn_unreadable(worker_id, e)
                continue  # a worker that cannot say what it serves is not one we can send work to
            snap.workers.append(WorkerInfo(worker_id, beat))
            for v in beat.voices:
                snap.voices.setdefault(v["voice_id"], v)
        self._snap = snap
        return snap

    def _warn_unreadable(self, worker_id: str, error: ProtocolError) -> None:
        if worker_id in self._warned:
            return
        if len(self._warned) >= _WARNED_MAX:
            self._warned.clear()
        self._warned.add(worker_id)
        log.warning("worker_heartbeat_unreadable", worker_id=worker_id, error=str(error))

    async def resolve(self, voice_id: str | None) -> tuple[str, str, dict[str, Any]]:
        """(voice_id, provider, voice record) for a requested voice; the default when None."""
        snap = await self.snapshot()
        if not snap.workers or (voice_id and voice_id not in snap.voices):
            snap = await self.snapshot(max_age=0)  # a worker may have just come up
        if not snap.workers:
            raise NoWorkers("no live workers: start a worker, or wait for one to come up")
        if not voice_id:
            voice_id = self._default_voice or next(
                (v for v, rec in snap.voices.items() if rec.get("provider") == "local"),
                next(iter(snap.voices), ""))
            if not voice_id:
                raise UnknownVoice("no voice given and no worker offers a default voice")
        rec = snap.voices.get(voice_id)
        if rec is not None:
            return voice_id, rec["provider"], rec
        if "elevenlabs" in snap.providers:
            # Any other id may be one of the account's ElevenLabs voices; upstream validates it.
            return voice_id, "elevenlabs", {"voice_id": voice_id, "provider": "elevenlabs"}
        raise UnknownVoice(f"voice {voice_id!r} is not offered by this deployment",
                           voices=sorted(snap.voices))
