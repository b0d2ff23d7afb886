"""The one place client JSON is decoded: every endpoint refuses the same malformations the same way.

Beyond "is it a JSON object", the decoder refuses what would blow up later, far from the client:
``NaN``/``Infinity`` and numbers too large for a float (every float a client sends is finite from
here on), and lone UTF-16 surrogates (``"\\ud800"``), which no UTF-8 encoder downstream accepts.
HTTP bodies must also say they are JSON: a browser sends ``text/plain`` and form bodies cross-site
without asking (no CORS preflight), so accepting them let any web page drive a keyless gateway.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

from aiohttp import web

from gateway.appkeys import SETTINGS
from shared.errors import InvalidJSON, InvalidRequest, RequestTimeout, UnsupportedMediaType

# Request key telling gateway/edge.py to close the connection after the 408 (the body may still trickle).
BODY_TIMED_OUT = "tts_body_timed_out"

# A JSON string can carry a lone surrogate only as a \\uD800-\\uDFFF escape: search only when one appears.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _constant(name: str) -> float:
    raise InvalidJSON(f"{name} is not a number this API accepts")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidRequest(f"the number {text[:32]} is out of range")
    return value


def loads(raw: str) -> Any:
    """``json.loads`` refusing NaN/Infinity (InvalidJSON), overflowing numbers and lone surrogates (InvalidRequest)."""
    try:
        value = json.loads(raw, parse_constant=_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        raise InvalidJSON(f"message is not valid JSON: {e}") from None
    if _SURROGATE_ESCAPE.search(raw) and not _encodable(value):
        # Valid JSON (RFC 8259 §8.2 leaves it to us), so a bad request, not broken framing: session kept.
        raise InvalidRequest("text must be valid Unicode (a lone UTF-16 surrogate was sent)")
    return value


def _encodable(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return True


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or None if it is no number (booleans are no numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return f if math.isfinite(f) else None


def parse_object(raw: str | bytes) -> dict[str, Any]:
    """A WebSocket text frame as a JSON object (bytes: the payload as sent, UTF-8 not yet checked)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJSON("text frame is not valid UTF-8") from None
    msg = loads(raw)
    if not isinstance(msg, dict):
        raise InvalidJSON("message must be a JSON object")
    return msg


def is_json_type(content_type: str) -> bool:
    """``application/json`` or any ``application/*+json`` (parameters such as charset ignored)."""
    ctype = content_type.lower()
    return ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))


async def request_object(request: web.Request) -> dict[str, Any]:
    """An HTTP request body as a JSON object; the body must be declared JSON (415) and arrive in time (408).

    aiohttp has no body deadline of its own: a keyed client trickling a body held its handler for minutes.
    """
    if not is_json_type(request.content_type):  # aiohttp says application/octet-stream when none is sent
        raise UnsupportedMediaType("send the body as JSON with Content-Type: application/json")
    deadline = request.app[SETTINGS].body_read_timeout_s
    try:
        async with asyncio.timeout(deadline):
            raw = await request.read()
    except TimeoutError:
        request[BODY_TIMED_OUT] = True
        raise RequestTimeout(f"the request body did not arrive within {deadline:g} s") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJSON("the request body is not valid UTF-8") from None
    body = loads(text)
    if not isinstance(body, dict):
        raise InvalidJSON("the request body must be a JSON object")
    return body
