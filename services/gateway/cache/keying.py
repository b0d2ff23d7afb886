"""What makes two requests the same phrase: the cache key.

Text is whitespace-collapsed and trimmed but stays case-sensitive (case changes prosody and
acronyms). Everything else that shapes the audio is part of the key: provider, voice, model,
output format, voice settings and options. A voice that is not a shared catalogue voice (a
tenant's own or cloned ElevenLabs voice) is namespaced by tenant, so one tenant's custom voice is
never served to another.
"""

from __future__ import annotations

import hashlib
import json

from gateway.contexts import ContextRequest

KEY_VERSION = 1
SHARED = "*"


def normalize(text: str) -> str:
    """Collapse runs of whitespace and trim; keep case."""
    return " ".join(text.split())


def namespace(request: ContextRequest, tenant: str, shared_voices: frozenset[str]) -> str:
    """``*`` for catalogue voices every tenant may use (local voices, ELEVENLABS_VOICES), else the tenant."""
    if request.provider == "local" or request.voice_id in shared_voices:
        return SHARED
    return tenant or "-"


def digest(request: ContextRequest, tenant: str, shared_voices: frozenset[str]) -> str:
    """The hex SHA-256 naming the request's cache entry."""
    material = [KEY_VERSION, namespace(request, tenant, shared_voices), request.provider, request.voice_id,
                request.model_id, request.fmt.name, request.voice_settings, request.options,
                normalize(request.text)]
    raw = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()
