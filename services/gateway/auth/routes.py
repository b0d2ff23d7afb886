"""HTTP routes of tenancy: ``/admin/keys`` (ADMIN_TOKEN) and ``POST /v1/tokens`` (client key).

``GET /v1/usage`` and ``GET /admin/usage`` live in gateway/usage_routes.py (usage metering).

The plaintext key is in the create response only; afterwards a key is addressed by its id.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from gateway.appkeys import SERVICES
from gateway.auth.guard import authenticate, require_admin
from gateway.auth.keystore import KeyStore
from gateway.http_errors import error_response
from gateway.jsonbody import finite, request_object
from gateway.keylimits.usage import read_usage
from shared.errors import Forbidden, InvalidRequest, NotFound, ServiceUnavailable, TTSError
from shared.logging import get_logger

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_LIMITS = {"quota_chars": 0, "max_contexts": 1, "rate_per_minute": 1}  # name → smallest allowed


def add_routes(app: web.Application) -> None:
    """Register the key, token and per-key usage routes."""
    r = app.router
    r.add_post("/admin/keys", create_key)
    r.add_get("/admin/keys", list_keys)
    r.add_get("/admin/keys/{key_id}", get_key)
    r.add_patch("/admin/keys/{key_id}", update_key)
    r.add_delete("/admin/keys/{key_id}", revoke_key)
    r.add_get("/admin/keys/{key_id}/usage", key_usage)
    r.add_post("/v1/tokens", mint_token)


def _json_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except TTSError as e:
            return error_response(e)
        except (RedisError, OSError):
            return error_response(ServiceUnavailable("Redis is unreachable"))
    return wrapped


@_json_errors
async def create_key(request: web.Request) -> web.Response:
    """``POST /admin/keys`` ``{"name", "quota_chars"?, "max_contexts"?, "rate_per_minute"?}`` (null = unlimited)."""
    await require_admin(request)
    body = await _body(request)
    name = body.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 100:
        raise InvalidRequest("name must be a string of 1-100 characters", field="name")
    s = request.app[SERVICES].settings
    defaults = {"quota_chars": s.default_key_quota_chars, "max_contexts": s.default_key_max_contexts,
                "rate_per_minute": s.default_key_rate_per_minute}
    limits = {k: _limit(body, k) if k in body else v for k, v in defaults.items()}
    rec, plaintext = await KeyStore(request.app[SERVICES].redis).create(name, **limits)
    log.info("key_created", key_id=rec.key_id, name=name)
    return web.json_response({"key": plaintext, **rec.to_json()}, status=201)


@_json_errors
async def list_keys(request: web.Request) -> web.Response:
    """``GET /admin/keys``."""
    await require_admin(request)
    recs = await KeyStore(request.app[SERVICES].redis).list()
    return web.json_response({"keys": [r.to_json() for r in recs]})


@_json_errors
async def get_key(request: web.Request) -> web.Response:
    """``GET /admin/keys/{id}``."""
    await require_admin(request)
    rec = await KeyStore(request.app[SERVICES].redis).get(request.match_info["key_id"])
    if rec is None:
        raise _unknown(request)
    return web.json_response(rec.to_json())


@_json_errors
async def update_key(request: web.Request) -> web.Response:
    """``PATCH /admin/keys/{id}`` with any of the limits; applies to the key's next context everywhere."""
    await require_admin(request)
    body = await _body(request)
    limits = {k: _limit(body, k) for k in _LIMITS if k in body}
    rec = await KeyStore(request.app[SERVICES].redis).update(request.match_info["key_id"], **limits)
    if rec is None:
        raise _unknown(request)
    log.info("key_updated", key_id=rec.key_id, fields=sorted(limits))
    return web.json_response(rec.to_json())


@_json_errors
async def revoke_key(request: web.Request) -> web.Response:
    """``DELETE /admin/keys/{id}``: the key and its tokens fail from their next use on."""
    await require_admin(request)
    rec = await KeyStore(request.app[SERVICES].redis).revoke(request.match_info["key_id"])
    if rec is None:
        raise _unknown(request)
    log.info("key_revoked", key_id=rec.key_id)
    return web.json_response(rec.to_json())


@_json_errors
async def key_usage(request: web.Request) -> web.Response:
    """``GET /admin/keys/{id}/usage?days=N``."""
    await require_admin(request)
    services = request.app[SERVICES]
    rec = await KeyStore(services.redis).get(request.match_info["key_id"])
    if rec is None:
        raise _unknown(request)
    return web.json_response(await read_usage(services.redis, rec.key_id, rec.quota_chars, _days(request)))


@_json_errors
async def mint_token(request: web.Request) -> web.Response:
    """``POST /v1/tokens`` ``{"ttl_s"?}``: a short-lived token for ``?token=`` on WebSocket URLs.

    Only a key may mint: a token that could mint its successor would never expire.
    """
    principal = await authenticate(request)
    if principal.via == "token":
        raise Forbidden("tokens are minted with an API key, not with another token")
    services = request.app[SERVICES]
    if services.tokens is None:
        raise ServiceUnavailable("tokens are not enabled on this gateway")
    body = await _body(request) if request.can_read_body else {}
    max_ttl = services.settings.token_ttl_s
    ttl = finite(body.get("ttl_s", max_ttl))
    if ttl is None or ttl <= 0:
        raise InvalidRequest("ttl_s must be a positive number", field="ttl_s")
    ttl = min(ttl, max_ttl)
    token, expires_at = services.tokens.mint(principal.key_id, ttl)
    return web.json_response({"token": token, "expires_at": expires_at, "ttl_s": ttl})


async def _body(request: web.Request) -> dict[str, Any]:
    return await request_object(request)


def _limit(body: dict[str, Any], name: str) -> int | None:
    value = body[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < _LIMITS[name]:
        raise InvalidRequest(f"{name} must be null (unlimited) or an integer >= {_LIMITS[name]}", field=name)
    return value


def _days(request: web.Request) -> int:
    try:
        return int(request.query.get("days", "7"))
    except ValueError:
        raise InvalidRequest("days must be an integer", field="days") from None


def _unknown(request: web.Request) -> TTSError:
    return NotFound(f"no key {request.match_info['key_id']!r}", key_id=request.match_info["key_id"])
