"""Typed errors as HTTP answers: the error's status, a JSON body, ``Retry-After`` when it has one."""

from __future__ import annotations

from aiohttp import web

from shared import metrics
from shared.errors import TTSError


def error_response(error: TTSError) -> web.Response:
    """``{"code", "message", "retryable", "details"?}`` with the error's status (429s carry Retry-After)."""
    headers = {}
    retry_after = error.details.get("retry_after_s")
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    metrics.CLIENT_ERRORS.labels(error.code).inc()
    return web.json_response(error.to_dict(), status=error.http_status, headers=headers)
