"""What makes two requests the same phrase: the cache key.

Text is whitespace-collapsed and trimmed but stays case-sensitive (case changes prosody and
acronyms). Everything else that shapes the audio is part of the key: provider, voice, model,
output format, voice settings and options. Every entry is namespaced by tenant (API key): a hit is
~1 ms where a miss takes a synthesis, so a shared entry would tell tenant B that someone said
exactly that sentence recently ("your code is 123456"), and B would not even pay for it. An
operator may opt in to sharing the catalogue voices' entries across tenants
(``CACHE_SHARE_ACROSS_TENANTS``) and accept that timing oracle; a tenant's own or cloned ElevenLabs
voice is never shared.
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


def namespace(request: ContextRequest, tenant: str, shared_voices: frozenset[str] | None) -> str:
    """The tenant; ``*`` for catalogue voices (local voices, ELEVENLABS_VOICES) when sharing is on.

    ``shared_voices`` is None unless the operator opted in to sharing across tenants.
    """
    if shared_voices is not None and (request.provider == "local" or request.voice_id in shared_voices):
        return SHARED
    return tenant or "-"


def digest(request: ContextRequest, tenant: str, shared_voices: frozenset[str] | None) -> str:
    """The hex SHA-256 naming the request's cache entry (``shared_voices``: see :func:`namespace`)."""
    material = [KEY_VERSION, namespace(request, tenant, shared_voices), request.provider, request.voice_id,
                request.model_id, request.fmt.name, request.voice_settings, request.options,
                normalize(request.text)]
    raw = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()
