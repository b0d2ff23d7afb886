"""The gateway process's shared services, built once in cleanup_ctx and handed to every session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from shared.pubsub import PubSubHub
from shared.settings import Settings

if TYPE_CHECKING:
    from gateway.admission import KeyAdmission
    from gateway.auth.tokens import TokenSigner
    from gateway.cache import PhraseCache
    from gateway.catalog import Catalog
    from gateway.dispatch import Dispatcher
    from gateway.metering import UsageWriter
    from gateway.session import SynthesisSession


@dataclass
class Registry:
    """Every open session of this process (for the monitor, drain and status)."""

    sessions: dict[str, SynthesisSession] = field(default_factory=dict)

    def add(self, session: SynthesisSession) -> None:
        """Track a session."""
        self.sessions[session.id] = session

    def remove(self, session: SynthesisSession) -> None:
        """Forget a session."""
        self.sessions.pop(session.id, None)

    def live_contexts(self) -> int:
        """Contexts not yet ended, across sessions."""
        return sum(s.live_context_count() for s in self.sessions.values())


@dataclass
class GatewayServices:
    """Redis, the pub/sub hub, the dispatcher, the catalogue and the session registry."""

    settings: Settings
    gateway_id: str
    redis: aioredis.Redis
    hub: PubSubHub
    dispatcher: Dispatcher
    catalog: Catalog
    registry: Registry = field(default_factory=Registry)
    draining: bool = False
    # Jobs of contexts failed because Redis went away; removed from Redis once it is back (gateway/monitor.py).
    outage_jobs: set[str] = field(default_factory=set)
    # Tenancy (gateway/tenancy.py fills these in): None means "not enforced" / "no cache".
    tokens: TokenSigner | None = None
    admission: KeyAdmission | None = None
    cache: PhraseCache | None = None
    metering: UsageWriter | None = None  # per-key usage in Redis (gateway/usage_routes.py installs it)
