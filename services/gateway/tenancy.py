"""Tenancy for the gateway: token signer, per-key limits, phrase cache, and their routes.

``install(app)`` adds the routes; :func:`open_tenancy` builds the resources for the core cleanup
context (gateway/app.py), which hands them to :class:`~gateway.services.GatewayServices` complete.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from gateway.auth import routes
from gateway.auth.tokens import TokenSigner
from gateway.cache import PhraseCache
from gateway.keylimits import KeyLimits
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class Tenancy:
    """What tenancy adds to the gateway's services (None: turned off by the settings)."""

    tokens: TokenSigner
    key_limits: KeyLimits | None
    cache: PhraseCache | None


def install(app: web.Application) -> None:
    """Add the tenancy routes (keys, tokens, usage) to the gateway app."""
    routes.add_routes(app)


@contextlib.asynccontextmanager
async def open_tenancy(settings: Settings, redis: aioredis.Redis, gateway_id: str) -> AsyncIterator[Tenancy]:
    """Build the signer, key limits (with their lease refresher) and cache; settle what is in flight at exit."""
    secret = settings.token_secret
    if not secret:
        secret = TokenSigner.random_secret()
        log.warning("token_secret_generated", message="TOKEN_SECRET is unset: browser tokens are signed with a "
                    "random per-process secret and will not survive a restart or work on other replicas")
    key_limits = None if settings.auth_disabled else KeyLimits(redis, settings, gateway_id)
    cache = PhraseCache(redis, settings) if settings.cache_enabled else None
    refresher = (asyncio.create_task(key_limits.refresh_forever(), name="lease-refresher")
                 if key_limits is not None else None)
    try:
        yield Tenancy(TokenSigner(secret), key_limits, cache)
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        if key_limits is not None:
            await key_limits.close()
        if cache is not None:
            await cache.close()
