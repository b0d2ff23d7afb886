"""Errors in the shapes ElevenLabs and OpenAI clients parse, with the HTTP status of the typed error.

ElevenLabs: ``{"detail": {"status": <code>, "message": ...}}``. OpenAI: ``{"error": {"message",
"type", "param", "code"}}``, and 400 where we would say 422 (OpenAI reports bad parameters as 400).
``status``/``code`` is always one of our stable codes (shared/errors.py, listed in the README).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared import metrics
from shared.errors import TTSError


def el_error(error: TTSError) -> web.Response:
    """An ElevenLabs-shaped error response."""
    metrics.CLIENT_ERRORS.labels(error.code).inc()
    return web.json_response({"detail": {"status": error.code, "message": error.message}},
                             status=error.http_status, headers=_retry_after(error))


def openai_error(error: TTSError) -> web.Response:
    """An OpenAI-shaped error response."""
    metrics.CLIENT_ERRORS.labels(error.code).inc()
    status = 400 if error.http_status == 422 else error.http_status
    param = error.details.get("field")
    body: dict[str, Any] = {"message": error.message, "type": _openai_type(status), "param": param,
                            "code": error.code}
    return web.json_response({"error": body}, status=status, headers=_retry_after(error))


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _retry_after(error: TTSError) -> dict[str, str]:
    # Key limits say how long to wait (next rate window, next UTC day for a quota); others a second.
    wait = error.details.get("retry_after_s")
    if wait is not None:
        return {"Retry-After": str(int(wait))}
    return {"Retry-After": "1"} if error.retryable and error.http_status in (429, 503) else {}
