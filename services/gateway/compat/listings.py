"""``GET /v1/voices``, ``GET /v1/voices/{voice_id}`` and ``GET /v1/models`` from the live catalogue.

``/v1/models`` is one path for two clients that parse incompatible shapes: the ElevenLabs SDK
(``client.models.list()``) parses a bare JSON array of ``{"model_id", ...}``, the OpenAI library
(``client.models.list()``) an object ``{"object": "list", "data": [{"id", ...}]}``. No single body
satisfies both, so the caller's credentials pick the shape: ``Authorization: Bearer`` (what the
OpenAI library always sends; ElevenLabs clients send ``xi-api-key``) or OpenAI's ``X-Stainless-*``
headers give the OpenAI list; everything else, keyless calls included, the ElevenLabs array.
``?shape=openai``/``?shape=elevenlabs`` overrides.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from gateway.appkeys import SERVICES
from gateway.compat.auth_edge import principal_of
from gateway.compat.http_errors import el_error, openai_error
from shared.errors import TTSError, UnknownVoice

# ElevenLabs models a deployment with the elevenlabs provider can pass through (the configured one first).
ELEVENLABS_MODELS = ("eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2", "eleven_flash_v2",
                     "eleven_turbo_v2")
# OpenAI model names /v1/audio/speech accepts (all mean the voice's default model).
OPENAI_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
_CREATED = int(time.time())


def wants_openai(request: web.Request) -> bool:
    """True when the caller is (by its headers) the OpenAI library."""
    shape = request.query.get("shape")
    if shape in ("openai", "elevenlabs"):
        return shape == "openai"
    if request.headers.get("xi-api-key"):
        return False
    auth = request.headers.get("Authorization", "")
    return auth.lower().startswith("bearer ") or any(h.lower().startswith("x-stainless-") for h in request.headers)


def el_voice(rec: dict[str, Any]) -> dict[str, Any]:
    """A catalogue record in ElevenLabs' voice shape."""
    labels = {str(k): str(v) for k, v in (rec.get("labels") or {}).items()}
    if rec.get("language"):
        labels.setdefault("language", str(rec["language"]))
    labels.setdefault("provider", str(rec.get("provider", "")))
    model = rec.get("default_model") or ""
    return {"voice_id": rec["voice_id"], "name": rec.get("name") or rec["voice_id"],
            "category": "premade", "labels": labels, "description": rec.get("description") or None,
            "preview_url": None, "available_for_tiers": [], "settings": None, "samples": None,
            "high_quality_base_model_ids": [model] if model else [],
            "verified_languages": [{"language": rec.get("language") or "en", "model_id": model}] if model else []}


async def list_voices(request: web.Request) -> web.Response:
    """``GET /v1/voices``: every voice this deployment offers, ElevenLabs-shaped."""
    try:
        await principal_of(request)
        snap = await request.app[SERVICES].catalog.snapshot()
    except TTSError as e:
        return el_error(e)
    voices = sorted(snap.voices.values(), key=lambda v: (v.get("provider") != "local", v["voice_id"]))
    return web.json_response({"voices": [el_voice(v) for v in voices]})


async def get_voice(request: web.Request) -> web.Response:
    """``GET /v1/voices/{voice_id}``."""
    try:
        await principal_of(request)
        snap = await request.app[SERVICES].catalog.snapshot()
        rec = snap.voices.get(request.match_info["voice_id"])
        if rec is None:
            raise UnknownVoice(f"voice {request.match_info['voice_id']!r} is not offered by this deployment")
    except TTSError as e:
        return el_error(e)
    return web.json_response(el_voice(rec))


async def model_ids(request: web.Request) -> list[tuple[str, str]]:
    """(model_id, name) of every model the live workers serve."""
    snap = await request.app[SERVICES].catalog.snapshot()
    settings = request.app[SERVICES].settings
    out: dict[str, str] = {}
    for rec in snap.voices.values():
        if rec.get("provider") == "local" and rec.get("default_model"):
            out.setdefault(rec["default_model"], f"{rec['default_model']} (local voice)")
    if "elevenlabs" in snap.providers:
        for mid in (settings.elevenlabs_model, *ELEVENLABS_MODELS):
            out.setdefault(mid, mid)
    return list(out.items())


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models`` in the caller's client's shape (see the module docstring)."""
    openai = wants_openai(request)
    try:
        await principal_of(request)
        models = await model_ids(request)
    except TTSError as e:
        return openai_error(e) if openai else el_error(e)
    if openai:
        ids = [mid for mid, _ in models] + list(OPENAI_ALIASES)
        return web.json_response({"object": "list", "data": [
            {"id": mid, "object": "model", "created": _CREATED, "owned_by": "tts-gateway"} for mid in ids]})
    return web.json_response([
        {"model_id": mid, "name": name, "can_do_text_to_speech": True, "can_do_voice_conversion": False,
         "can_use_style": mid.startswith("eleven_"), "can_use_speaker_boost": mid.startswith("eleven_"),
         "can_be_finetuned": False, "serves_pro_voices": False, "requires_alpha_access": False,
         "languages": [{"language_id": "en", "name": "English"}], "description": name}
        for mid, name in models])
