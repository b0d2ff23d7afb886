"""Authenticate compatible-endpoint callers where their clients put the key, through ``gateway.auth``.

Headers (``xi-api-key``, ``Authorization: Bearer``) and ``?token=`` are read by ``authenticate``
itself. ElevenLabs' WebSocket also allows ``?authorization=`` and a key in the first message
(``xi_api_key``/``xi-api-key``/``authorization``): those are presented to ``authenticate`` as a
Bearer header on a clone of the request, so there is one place that decides who a caller is.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from gateway.auth.guard import authenticate
from gateway.auth.principal import Principal


def _bearer_clone(request: web.Request, credential: str) -> web.Request:
    value = credential.strip()
    if value.lower().startswith("bearer "):
        value = value[7:].strip()
    headers = CIMultiDict(request.headers)
    headers.pop("xi-api-key", None)
    headers["Authorization"] = f"Bearer {value}"
    return request.clone(headers=headers)


def has_credentials(request: web.Request) -> bool:
    """True when the request itself (headers or query) carries something to authenticate with."""
    h = request.headers
    return bool(h.get("xi-api-key") or h.get("Authorization") or request.query.get("authorization")
                or request.query.get("token") or request.query.get("single_use_token"))


async def principal_of(request: web.Request, credential: str | None = None) -> Principal:
    """Who is calling; ``credential`` is a key from a first WebSocket message. Raises Unauthorized."""
    if credential:
        return await authenticate(_bearer_clone(request, credential))
    query_auth = request.query.get("authorization")
    if query_auth and not request.headers.get("xi-api-key") and not request.headers.get("Authorization"):
        return await authenticate(_bearer_clone(request, query_auth))
    return await authenticate(request)
