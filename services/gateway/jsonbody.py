"""The one place client JSON is decoded: every endpoint refuses the same malformations the same way."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from shared.errors import InvalidJSON


def parse_object(raw: str | bytes) -> dict[str, Any]:
    """A WebSocket text frame as a JSON object (bytes: the payload as sent, UTF-8 not yet checked)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJSON("text frame is not valid UTF-8") from None
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InvalidJSON(f"message is not valid JSON: {e}") from None
    if not isinstance(msg, dict):
        raise InvalidJSON("message must be a JSON object")
    return msg


async def request_object(request: web.Request) -> dict[str, Any]:
    """An HTTP request body as a JSON object."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidJSON("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidJSON("the request body must be a JSON object")
    return body
