"""The one rule for voice ids, checked wherever a client names a voice and again before a URL is built.

A voice id travels into Redis, logs, socket keys, maps and the upstream URL path, so it must be
short and a single harmless path segment: 1-64 characters of ``A-Z a-z 0-9 _ -``. ElevenLabs' ids
(20 letters and digits), OpenAI's voice names and the local voice ids all fit; ``..``, ``/``, ``%``,
spaces and 40 KB strings do not.
"""

from __future__ import annotations

import re

from shared.errors import InvalidRequest

VOICE_ID_MAX_CHARS = 64
_VOICE_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{VOICE_ID_MAX_CHARS}}}")
RULE = f"voice ids are 1-{VOICE_ID_MAX_CHARS} characters of A-Z a-z 0-9 _ -"


def is_voice_id(value: object) -> bool:
    """Does ``value`` follow the voice-id rule?"""
    return isinstance(value, str) and _VOICE_ID.fullmatch(value) is not None


def check_voice_id(value: str, field: str = "voice") -> str:
    """``value`` if it is a valid voice id, else ``invalid_request`` naming ``field`` (never echoing the value)."""
    if not is_voice_id(value):
        raise InvalidRequest(f"bad voice id: {RULE}", field=field)
    return value
