"""Turn what a client asked for (any protocol) into a validated ContextRequest."""

from __future__ import annotations

from typing import Any

import msgpack

from gateway.catalog import Catalog
from gateway.contexts import ContextRequest
from shared.audio.formats import UnsupportedFormat as AudioUnsupported
from shared.audio.formats import parse_format
from shared.errors import InvalidRequest, UnsupportedFormat
from shared.voice_ids import check_voice_id


async def build_request(catalog: Catalog, *, context_id: str, voice: str | None, model: str | None,
                        fmt: str, voice_settings: dict[str, Any] | None = None,
                        options: dict[str, Any] | None = None, text: str = "", input_closed: bool = False,
                        use_cache: bool = True, trace_parent: dict[str, str] | None = None) -> ContextRequest:
    """Resolve the voice to a provider and parse the format; raise typed errors otherwise.

    Every entry point (native ``start``, ElevenLabs WS and HTTP paths, OpenAI's ``voice``) comes through
    here, so this is where a voice id is checked (``invalid_request``, see shared/voice_ids.py).
    """
    if voice:
        check_voice_id(voice)
    try:
        audio_format = parse_format(fmt)
    except AudioUnsupported as e:
        raise UnsupportedFormat(str(e), field="format") from e
    _check_encodable("voice_settings", voice_settings)
    _check_encodable("options", options)
    voice_id, provider, record = await catalog.resolve(voice)
    return ContextRequest(
        context_id=context_id, voice_id=voice_id, provider=provider,
        model_id=model or record.get("default_model", "") or "", fmt=audio_format,
        voice_settings=dict(voice_settings or {}), options=dict(options or {}), text=text,
        input_closed=input_closed, use_cache=use_cache, trace_parent=trace_parent or {})


def _check_encodable(name: str, value: Any) -> None:
    """Client JSON travels to the worker as msgpack: an integer past 64 bits (or nesting past its limit)
    cannot, and used to escape as an OverflowError that silently closed the session."""
    try:
        msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        raise InvalidRequest(f"{name} holds a value out of range (integers must fit in 64 bits)",
                             field=name) from None
