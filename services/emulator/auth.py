"""API-key checks shared by the HTTP and WebSocket endpoints (``xi-api-key`` and its alternatives)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from aiohttp import web

# Spellings of the key accepted in a WebSocket's first message: the spec itself uses all three.
MESSAGE_KEY_FIELDS: tuple[str, ...] = ("xi_api_key", "xi-api-key", "authorization")


def _strip_bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else value.strip()


def key_from_request(request: web.Request) -> str | None:
    """The key from the ``xi-api-key`` header, an ``Authorization: Bearer`` header, or ``?authorization=``."""
    header = request.headers.get("xi-api-key")
    if header:
        return header.strip()
    # Bearer in a header is unconfirmed for ElevenLabs; accepted because refusing it helps no client.
    for value in (request.headers.get("Authorization"), request.query.get("authorization")):
        if value:
            return _strip_bearer(value)
    return None


def key_from_message(message: Mapping[str, Any]) -> str | None:
    """The key carried in a WebSocket message, under any of its documented field names."""
    for name in MESSAGE_KEY_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value:
            return _strip_bearer(value)
    return None


def key_accepted(expected: str | None, presented: str | None) -> bool:
    """True when no key is configured, or ``presented`` equals it (constant-time compare)."""
    if expected is None:
        return True
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())
