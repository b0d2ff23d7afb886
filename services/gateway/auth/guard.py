"""``authenticate`` (client keys and tokens) and ``require_admin`` (the operator's ADMIN_TOKEN).

Clients present a key where ElevenLabs and OpenAI clients already put one: an ``xi-api-key``
header or ``Authorization: Bearer``. Browsers, which cannot set headers on a WebSocket, present a
short-lived signed token as ``?token=`` (minted by ``POST /v1/tokens``). The admin token is a
separate secret: a client key never opens an admin route, however valid.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from redis.exceptions import RedisError

from gateway.appkeys import SERVICES
from gateway.auth.keystore import KeyStore, looks_like_key
from gateway.auth.origin import check_origin, is_websocket
from gateway.auth.principal import DEV_PRINCIPAL, Principal
from gateway.auth.tokens import TOKEN_PREFIX
from shared.errors import Forbidden, ServiceUnavailable, Unauthorized

# Query parameters a token may arrive in (``single_use_token`` is ElevenLabs' name for the same idea).
TOKEN_PARAMS = ("token", "single_use_token")


async def authenticate(request: web.Request) -> Principal:
    """The caller's principal; raises Unauthorized. With AUTH_DISABLED the anonymous ``dev`` principal.

    A WebSocket handshake from a browser must also come from an allowed ``Origin`` (Forbidden), in dev
    mode too: a keyless gateway is exactly what a foreign page would like to drive.
    """
    services = request.app[SERVICES]
    if is_websocket(request):
        check_origin(request, services.settings.allowed_origins)
    if services.settings.auth_disabled:
        return DEV_PRINCIPAL
    key = _credential(request.headers.get("xi-api-key", "").strip())
    token = _credential(next((request.query[p] for p in TOKEN_PARAMS if request.query.get(p)), ""))
    bearer = _bearer(request)
    if bearer.startswith(TOKEN_PREFIX):
        token = token or bearer
    elif bearer:
        key = key or bearer
    store = KeyStore(services.redis)
    try:
        if key:
            rec = await store.by_secret(key) if looks_like_key(key) else None
            if rec is None:
                raise Unauthorized("invalid or revoked API key")
            return rec.principal("key")
        if token:
            if services.tokens is None:
                raise Unauthorized("tokens are not enabled on this gateway")
            claims = services.tokens.verify(token)
            rec = await store.get(claims.key_id)
            if rec is None or not rec.active:
                raise Unauthorized("the key this token was issued for is revoked")
            return rec.principal("token")
    except (RedisError, OSError) as e:
        raise ServiceUnavailable("cannot check the API key: Redis is unreachable") from e
    raise Unauthorized("missing API key: send an xi-api-key header, Authorization: Bearer, or ?token=")


async def require_admin(request: web.Request) -> None:
    """Pass only requests bearing ADMIN_TOKEN (``Authorization: Bearer`` or ``X-Admin-Token``)."""
    expected = request.app[SERVICES].settings.admin_token
    if not expected:
        raise Forbidden("the admin API is disabled: set ADMIN_TOKEN")
    presented = _credential(request.headers.get("x-admin-token", "").strip()) or _bearer(request)
    # Constant-time: the comparison must not leak how much of a guess was right.
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized("admin routes need the ADMIN_TOKEN (Authorization: Bearer or X-Admin-Token)")


def _bearer(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    return _credential(value.strip()) if scheme.lower() == "bearer" else ""


def _credential(value: str) -> str:
    """Keys, tokens and the admin token are printable ASCII; anything else is a wrong credential.

    Header bytes above 0x7f reach us as surrogate escapes that no encoder accepts: hashing or comparing
    them raised a 500 with a traceback instead of the 401 a wrong key gets.
    """
    if value and not (value.isascii() and value.isprintable()):
        raise Unauthorized("credentials must be printable ASCII")
    return value
