"""The voices and models the emulator lists, and each model's per-request character limit."""

from __future__ import annotations

from typing import Any

DEFAULT_HTTP_MODEL = "eleven_multilingual_v2"

# Premade voice ids that appear in ElevenLabs' docs and SDK examples, so copied snippets work as-is.
VOICES: tuple[dict[str, Any], ...] = tuple(
    {
        "voice_id": voice_id,
        "name": name,
        "category": "premade",
        "labels": {"accent": accent, "gender": gender, "use_case": "narration"},
        "description": f"Emulated voice {name}: deterministic tones, one per character.",
        "preview_url": None,
        "available_for_tiers": [],
        "settings": None,
        "high_quality_base_model_ids": ["eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2"],
    }
    for voice_id, name, accent, gender in (
        ("21m00Tcm4TlvDq8ikWAM", "Rachel", "american", "female"),
        ("JBFqnCBsd6RMkjVDRZzb", "George", "british", "male"),
        ("EXAVITQu4vr4xnSDxMaL", "Sarah", "american", "female"),
        ("pNInz6obpgDQGcFmaJgB", "Adam", "american", "male"),
    )
)

# Per-request limits from the models page (Aug 2025); unlisted models get the multilingual limit.
CHARACTER_LIMITS: dict[str, int] = {
    "eleven_flash_v2_5": 40_000,
    "eleven_turbo_v2_5": 40_000,
    "eleven_flash_v2": 30_000,
    "eleven_turbo_v2": 30_000,
    "eleven_multilingual_v2": 10_000,
    "eleven_v3": 3_000,
}
DEFAULT_CHARACTER_LIMIT = 10_000

_MODEL_NAMES: dict[str, str] = {
    "eleven_flash_v2_5": "Eleven Flash v2.5",
    "eleven_turbo_v2_5": "Eleven Turbo v2.5",
    "eleven_flash_v2": "Eleven Flash v2",
    "eleven_turbo_v2": "Eleven Turbo v2",
    "eleven_multilingual_v2": "Eleven Multilingual v2",
    "eleven_v3": "Eleven v3",
}

MODELS: tuple[dict[str, Any], ...] = tuple(
    {
        "model_id": model_id,
        "name": name,
        "can_be_finetuned": True,
        "can_do_text_to_speech": True,
        "can_do_voice_conversion": False,
        "can_use_style": model_id in ("eleven_multilingual_v2", "eleven_v3"),
        "can_use_speaker_boost": True,
        "serves_pro_voices": False,
        "token_cost_factor": 0.5 if "flash" in model_id or "turbo" in model_id else 1.0,
        "description": f"{name} (emulated).",
        "requires_alpha_access": False,
        "max_characters_request_free_user": min(2_500, CHARACTER_LIMITS[model_id]),
        "max_characters_request_subscribed_user": CHARACTER_LIMITS[model_id],
        "maximum_text_length_per_request": CHARACTER_LIMITS[model_id],
        "languages": [{"language_id": "en", "name": "English"}],
    }
    for model_id, name in _MODEL_NAMES.items()
)


def character_limit(model_id: str | None) -> int:
    """The most characters one HTTP request may carry for ``model_id``."""
    return CHARACTER_LIMITS.get(model_id or DEFAULT_HTTP_MODEL, DEFAULT_CHARACTER_LIMIT)
