"""Wires tenancy into the app: token signer, per-key admission, phrase cache, and their routes.

``install(app)`` is the one line ``create_app`` needs; the resources are built in a cleanup_ctx
that runs after the core services exist (and is torn down before them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.admission import KeyAdmission
from gateway.appkeys import SERVICES, SETTINGS
from gateway.auth import routes
from gateway.auth.tokens import TokenSigner
from gateway.cache import PhraseCache
from shared.logging import get_logger

log = get_logger(__name__)


def install(app: web.Application) -> None:
    """Add the tenancy routes and resources to the gateway app (call after the core cleanup_ctx)."""
    routes.add_routes(app)
    app.cleanup_ctx.append(_tenancy_ctx)


async def _tenancy_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    services = app[SERVICES]
    secret = settings.token_secret
    if not secret:
        secret = TokenSigner.random_secret()
        log.warning("token_secret_generated", message="TOKEN_SECRET is unset: browser tokens are signed with a "
                    "random per-process secret and will not survive a restart or work on other replicas")
    services.tokens = TokenSigner(secret)
    admission = None
    if not settings.auth_disabled:
        admission = services.admission = KeyAdmission(services.redis, settings, services.gateway_id)
    cache = services.cache = PhraseCache(services.redis, settings) if settings.cache_enabled else None
    refresher = (asyncio.create_task(admission.refresh_forever(), name="lease-refresher")
                 if admission is not None else None)
    yield
    if refresher is not None:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
    if admission is not None:
        await admission.close()
    if cache is not None:
        await cache.close()
