"""``GET /v1/voices``, ``GET /v2/voices``, ``GET /v1/voices/{voice_id}`` and ``GET /v1/models``.

All from the live catalogue. ``/v2/voices`` pages and searches as ElevenLabs documents it:
``page_size`` (1-100, default 10), ``next_page_token`` (opaque; the previous page's), ``search``
(case-insensitive, in name, description, labels and id), ``voice_ids`` (repeatable), and
``include_total_count`` (default true); the body is ``{"voices", "has_more", "total_count",
"next_page_token"}``. Other documented filters (``sort``, ``voice_type``, ``category``...) are
accepted and have no effect: every voice here is a premade one, listed in one stable order.

``/v1/models`` is one path for two clients that parse incompatible shapes: the ElevenLabs SDK
(``client.models.list()``) parses a bare JSON array of ``{"model_id", ...}``, the OpenAI library
(``client.models.list()``) an object ``{"object": "list", "data": [{"id", ...}]}``. No single body
satisfies both, so the caller's credentials pick the shape: ``Authorization: Bearer`` (what the
OpenAI library always sends; ElevenLabs clients send ``xi-api-key``) or OpenAI's ``X-Stainless-*``
headers give the OpenAI list; everything else, keyless calls included, the ElevenLabs array.
``?shape=openai``/``?shape=elevenlabs`` overrides.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from aiohttp import web

from gateway.appkeys import SERVICES
from gateway.compat.auth_edge import principal_of
from gateway.compat.http_errors import el_error, openai_error
from shared.errors import InvalidRequest, TTSError, UnknownVoice

# ElevenLabs models a deployment with the elevenlabs provider can pass through (the configured one first).
ELEVENLABS_MODELS = ("eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2", "eleven_flash_v2",
                     "eleven_turbo_v2")
# OpenAI model names /v1/audio/speech accepts (all mean the voice's default model).
OPENAI_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
_CREATED = int(time.time())
V2_DEFAULT_PAGE, V2_MAX_PAGE = 10, 100
_MAX_SEARCH = 200


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


async def list_voices_v2(request: web.Request) -> web.Response:
    """``GET /v2/voices``: one page of voices, searched (see the module docstring)."""
    try:
        await principal_of(request)
        page_size = _page_size(request.query.get("page_size"))
        after = _token_key(request.query.get("next_page_token"))
        search = request.query.get("search", "").strip().lower()
        if len(search) > _MAX_SEARCH:
            raise InvalidRequest(f"search must be at most {_MAX_SEARCH} characters", field="search")
        wanted = set(request.query.getall("voice_ids", []))
        include_total = request.query.get("include_total_count", "true").lower() != "false"
        snap = await request.app[SERVICES].catalog.snapshot()
    except TTSError as e:
        return el_error(e)
    records = sorted(snap.voices.values(), key=_v2_key)
    matches = [el_voice(r) for r in records
               if (not wanted or r["voice_id"] in wanted) and (not search or search in _haystack(r))]
    start = 0
    if after is not None:
        # Keyed on the last voice sent, not an offset: voices coming and going between calls do not
        # shift the next page (nothing is repeated, nothing skipped that existed throughout).
        start = next((i for i, v in enumerate(matches) if _v2_key_of(v) > after), len(matches))
    page = matches[start:start + page_size]
    has_more = start + page_size < len(matches)
    token = _token(_v2_key_of(page[-1])) if has_more and page else None
    return web.json_response({"voices": page, "has_more": has_more,
                              "total_count": len(matches) if include_total else None, "next_page_token": token})


def _v2_key(rec: dict[str, Any]) -> tuple[str, str]:
    return (str(rec.get("name") or rec["voice_id"]).lower(), rec["voice_id"])


def _v2_key_of(voice: dict[str, Any]) -> tuple[str, str]:
    return (str(voice["name"]).lower(), voice["voice_id"])


def _haystack(rec: dict[str, Any]) -> str:
    labels = " ".join(f"{k} {v}" for k, v in (rec.get("labels") or {}).items())
    return " ".join([rec["voice_id"], str(rec.get("name") or ""), str(rec.get("description") or ""),
                     str(rec.get("language") or ""), labels]).lower()


def _page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return V2_DEFAULT_PAGE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= V2_MAX_PAGE:
        raise InvalidRequest(f"page_size must be an integer from 1 to {V2_MAX_PAGE}", field="page_size")
    return size


def _token(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode("\x00".join(key).encode()).decode("ascii").rstrip("=")


def _token_key(raw: str | None) -> tuple[str, str] | None:
    if not raw:
        return None
    try:
        if len(raw) > 1024:
            raise ValueError("too long")
        name, _, vid = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().partition("\x00")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("next_page_token is not one this server issued", field="next_page_token") from None
    return (name, vid)


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
