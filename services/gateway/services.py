"""The gateway process's shared services: built complete, in order, before any session exists.

:class:`GatewayServices` is frozen and every field is set when it is built (``app._services_ctx``),
so nothing depends on which cleanup context ran first. The key limits and the phrase cache are None
only when the settings turn them off. Runtime state that does change (draining, jobs lost in a Redis
outage, the open sessions) lives in :class:`RuntimeState` and :class:`Registry`.

The registry holds sessions through :class:`LiveSession`, the part of a session the process-wide
loops (monitor, drain, revocation, status) use: that keeps this module free of the session module,
which imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis

from gateway.auth.tokens import TokenSigner
from gateway.cache import PhraseCache
from gateway.catalog import Catalog
from gateway.contexts import ContextState
from gateway.dispatch import Dispatcher
from gateway.keylimits import KeyLimits
from gateway.metering import UsageWriter
from shared.errors import TTSError
from shared.pubsub import PubSubHub
from shared.settings import Settings


class LiveSession(Protocol):
    """What the process-wide loops may do with an open session (gateway/session.py implements it)."""

    @property
    def id(self) -> str:
        """The session's id."""

    @property
    def tenant(self) -> str:
        """The key the session runs under ("" without one)."""

    @property
    def closed(self) -> bool:
        """The session is closing or closed."""

    @property
    def contexts(self) -> dict[str, ContextState]:
        """Live contexts by context id."""

    def live_context_count(self) -> int:
        """Contexts not yet ended."""

    def fail_context(self, ctx: ContextState, error: TTSError) -> None:
        """End a context with an error event."""

    async def cancel_job(self, ctx: ContextState, reason: str) -> None:
        """Tell the context's current job to stop (best effort)."""

    async def retry(self, ctx: ContextState, reason: str) -> bool:
        """Re-enqueue a context that produced no audio yet; False when it may not be retried."""

    def close_with(self, error: TTSError) -> None:
        """Ask the session's adapter to end the session with ``error``."""


@dataclass
class Registry:
    """Every open session of this process (for the monitor, drain and status)."""

    sessions: dict[str, LiveSession] = field(default_factory=dict)

    def add(self, session: LiveSession) -> None:
        """Track a session."""
        self.sessions[session.id] = session

    def remove(self, session: LiveSession) -> None:
        """Forget a session."""
        self.sessions.pop(session.id, None)

    def live_contexts(self) -> int:
        """Contexts not yet ended, across sessions."""
        return sum(s.live_context_count() for s in self.sessions.values())


@dataclass
class RuntimeState:
    """What changes while the process runs."""

    draining: bool = False
    # Jobs of contexts failed because Redis went away; removed from Redis once it is back (gateway/monitor.py).
    outage_jobs: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class GatewayServices:
    """Redis, the pub/sub hub, the job queue, the catalogue, tenancy and the session registry."""

    settings: Settings
    gateway_id: str
    redis: aioredis.Redis
    hub: PubSubHub
    queue: Dispatcher  # jobs and their input, written to Redis
    catalog: Catalog
    tokens: TokenSigner
    key_limits: KeyLimits | None  # None: AUTH_DISABLED (no keys, nothing to limit)
    cache: PhraseCache | None  # None: CACHE_ENABLED is off
    metering: UsageWriter  # per-key usage into Redis (gateway/metering.py; routes in gateway/usage_routes.py)
    registry: Registry = field(default_factory=Registry)
    state: RuntimeState = field(default_factory=RuntimeState)

    @property
    def draining(self) -> bool:
        """The process is shutting down: no new sessions or contexts."""
        return self.state.draining
