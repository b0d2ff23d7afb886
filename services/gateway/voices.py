"""The voice catalogue served to clients."""

from __future__ import annotations

from aiohttp import web

from gateway.appkeys import SERVICES
from shared.audio.formats import SUPPORTED_FORMATS


async def list_voices(request: web.Request) -> web.Response:
    """``GET /v1/catalog``: every voice this deployment offers, with its provider, and the formats."""
    snap = await request.app[SERVICES].catalog.snapshot()
    voices = sorted(snap.voices.values(), key=lambda v: (v.get("provider") != "local", v["voice_id"]))
    return web.json_response({"voices": voices, "providers": sorted(snap.providers),
                              "formats": list(SUPPORTED_FORMATS)})
