"""ElevenLabs' HTTP text-to-speech: ``POST /v1/text-to-speech/{voice_id}[/stream][/with-timestamps]``.

Query ``output_format`` (default mp3_44100_128; every format of shared.audio, ``wav_*`` included),
``enable_logging`` and ``optimize_streaming_latency`` (accepted, no effect). JSON body: ``text``
(required), ``model_id`` (unknown ids mean the voice's default), ``voice_settings`` (null = defaults),
``language_code``, ``seed``, ``apply_text_normalization``; the other documented fields are accepted
and ignored. ``/stream`` and the plain endpoint both stream raw audio as it is synthesized;
``/stream/with-timestamps`` is NDJSON, one object per chunk with absolute-second alignment;
``/with-timestamps`` is one JSON object, written as the audio comes (prefix, base64 pieces, then the
alignment arrays), so the gateway never holds the clip: its memory per request is the alignment's
serialized text (~20 bytes a character), not the audio. ``?words=true`` on either timestamp endpoint
adds ``words: [{"word", "start_ms", "end_ms"}]`` (see compat.alignment). Errors:
``{"detail":{"status","message"}}`` with the typed error's HTTP status.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from gateway.appkeys import SERVICES
from gateway.compat import el_messages as m
from gateway.compat.alignment import AlignmentJson, WordCutter, absolute_pair
from gateway.compat.audio_edge import CONTEXT_ID, Base64Stream, Timeline, Utterance, stream_body
from gateway.compat.auth_edge import principal_of
from gateway.compat.http_errors import el_error
from gateway.contexts import ContextRequest
from gateway.ctxtrace import request_carrier
from gateway.events import AudioEvent
from gateway.jsonbody import request_object
from gateway.requests import build_request
from shared.errors import InvalidRequest, ShuttingDown, TTSError

_PASSED_OPTIONS = ("language_code", "seed", "apply_text_normalization")


async def tts_audio(request: web.Request) -> web.StreamResponse:
    """``POST /v1/text-to-speech/{voice_id}`` and ``.../stream``: audio bytes, chunked."""
    try:
        tenant, req = await _parse(request)
        async with Utterance(request.app[SERVICES], api="el_http", tenant=tenant) as utt:
            await utt.start(req)
            return await stream_body(request, utt, req.fmt, content_type=req.fmt.content_type,
                                     render=lambda ev: ev.audio)
    except TTSError as e:
        return el_error(e)


async def tts_stream_with_timestamps(request: web.Request) -> web.StreamResponse:
    """``POST .../stream/with-timestamps``: one JSON line per chunk, alignment in absolute seconds."""
    try:
        tenant, req = await _parse(request, timestamps=True)
        timeline = Timeline(req.fmt)
        words = WordCutter() if m.query_bool(request.query, "words", False) else None

        def line(ev: AudioEvent) -> bytes:
            start = timeline.advance(ev.audio)
            al, normalized = absolute_pair(ev.alignment, start)
            obj: dict[str, Any] = {"audio_base64": base64.b64encode(ev.audio).decode("ascii"), "alignment": al,
                                   "normalized_alignment": normalized}
            if words is not None:
                obj["words"] = words.feed(al)
            return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

        def last_words() -> bytes:
            # A word still open at the end completes only now: one more line, with no audio, carries it.
            rest = words.end() if words is not None else []
            if not rest:
                return b""
            obj = {"audio_base64": "", "alignment": None, "normalized_alignment": None, "words": rest}
            return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

        async with Utterance(request.app[SERVICES], api="el_http", tenant=tenant) as utt:
            await utt.start(req)
            return await stream_body(request, utt, req.fmt, content_type="application/json", render=line,
                                     epilogue=last_words)
    except TTSError as e:
        return el_error(e)


async def tts_with_timestamps(request: web.Request) -> web.StreamResponse:
    """``POST .../with-timestamps``: one JSON object, streamed as the audio comes (never held whole)."""
    try:
        tenant, req = await _parse(request, timestamps=True)
        timeline = Timeline(req.fmt)
        b64 = Base64Stream()
        alignment = AlignmentJson(words=bool(m.query_bool(request.query, "words", False)))

        def piece(ev: AudioEvent) -> bytes:
            alignment.add(*absolute_pair(ev.alignment, timeline.advance(ev.audio)))
            return b64.feed(ev.audio)

        async with Utterance(request.app[SERVICES], api="el_http", tenant=tenant) as utt:
            await utt.start(req)
            return await stream_body(request, utt, req.fmt, content_type="application/json", render=piece,
                                     prologue=b'{"audio_base64":"',
                                     epilogue=lambda: b64.end() + b'"' + alignment.render())
    except TTSError as e:
        return el_error(e)


async def _parse(request: web.Request, timestamps: bool = False) -> tuple[str, ContextRequest]:
    services = request.app[SERVICES]
    if services.draining:
        raise ShuttingDown("gateway is restarting; retry")
    principal = await principal_of(request)
    fmt = m.parse_output_format(request.query.get("output_format"))
    for name in ("enable_logging",):
        m.query_bool(request.query, name)
    body = await request_object(request)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("text is required and must be a non-empty string", field="text")
    options: dict[str, Any] = {k: body[k] for k in _PASSED_OPTIONS if body.get(k) is not None}
    if timestamps:
        # Timing for every chunk: without it ElevenLabs sends one block of timing for the whole
        # generation on its first chunk (none after), which a long text outgrows (issue 17.5).
        options["sync_alignment"] = True
    req = await build_request(services.catalog, context_id=CONTEXT_ID, voice=request.match_info["voice_id"],
                              model=m.normalize_model(_str(body.get("model_id"))), fmt=fmt.name,
                              voice_settings=m.clean_voice_settings(body.get("voice_settings")),
                              options=options, text=text, input_closed=True,
                              trace_parent=request_carrier(request))
    return principal.key_id, req


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
