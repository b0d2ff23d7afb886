"""The one typed object a worker keeps in arq's ctx."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from shared.pubsub import PubSubHub
from shared.settings import Settings
from worker.inputs import InputRouter
from worker.providers.base import Provider
from worker.publisher import Publisher

STATE_KEY = "tts_state"


@dataclass
class WorkerState:
    """Everything a job needs: Redis, the publisher, inputs and the providers."""

    settings: Settings
    worker_id: str
    redis: aioredis.Redis
    hub: PubSubHub
    publisher: Publisher
    inputs: InputRouter
    providers: dict[str, Provider]
    started_at: float = field(default_factory=time.time)
    active_jobs: set[str] = field(default_factory=set)
    # Running jobs whose input is open -> their session id (worker/listeners.py watches these).
    listening: dict[str, str] = field(default_factory=dict)
    # Providers started (models loaded, pools warmed): /readyz answers 200 only from then on.
    ready: bool = False
    draining: bool = False
    jobs_done: int = 0
