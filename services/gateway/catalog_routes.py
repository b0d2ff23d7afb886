"""``GET /v1/catalog``: the native voice catalogue served to clients (the data is :mod:`gateway.catalog`)."""

from __future__ import annotations

from aiohttp import web

from gateway.appkeys import SERVICES
from gateway.auth.guard import authenticate
from gateway.http_errors import error_response
from shared.audio.formats import SUPPORTED_FORMATS
from shared.errors import TTSError


async def get_catalog(request: web.Request) -> web.Response:
    """``GET /v1/catalog``: every voice this deployment offers, with its provider, and the formats."""
    try:
        await authenticate(request)  # like every client route: what a deployment offers is its own business
    except TTSError as e:
        return error_response(e)
    snap = await request.app[SERVICES].catalog.snapshot()
    voices = sorted(snap.voices.values(), key=lambda v: (v.get("provider") != "local", v["voice_id"]))
    return web.json_response({"voices": voices, "providers": sorted(snap.providers),
                              "formats": list(SUPPORTED_FORMATS)})
