"""OpenAI's ``POST /v1/audio/speech``, streamed as it is synthesized.

Body: ``input`` (required), ``voice`` (OpenAI's names — alloy, ash, ballad, coral, echo, fable, nova,
onyx, sage, shimmer, verse, marin, cedar — mean the voice ``OPENAI_VOICES`` maps them to, else a
catalogue voice of that id, else the deployment's default voice; any other id is looked up as given),
``model`` (tts-1, tts-1-hd, gpt-4o-mini-tts and other unknown ids mean the voice's default model;
an ElevenLabs id such as eleven_flash_v2_5 is passed on),
``response_format`` (mp3 → mp3_44100_128, wav → a streaming 24 kHz WAV with one header, pcm → raw
24 kHz s16le as OpenAI sends it, opus → Ogg Opus 48 kHz 64 kbps, aac → ADTS AAC 24 kHz 64 kbps,
flac → a FLAC stream at 24 kHz; all streamed as they are encoded),
``speed`` (0.25–4.0; the provider may allow less: the local voice 0.5–2.0, ElevenLabs 0.7–1.2),
``instructions`` (no provider here takes free-form style instructions: ignored, and the response
says so in ``X-Instructions: ignored; ...``), ``stream_format`` (``audio``, the default, or ``sse``: ``speech.audio.delta``
events then ``speech.audio.done``). Errors: ``{"error":{"message","type","param","code"}}``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from gateway.appkeys import SERVICES
from gateway.compat.audio_edge import CONTEXT_ID, Utterance, stream_body
from gateway.compat.auth_edge import principal_of
from gateway.compat.el_messages import normalize_model
from gateway.compat.http_errors import openai_error
from gateway.ctxtrace import request_carrier
from gateway.events import AudioEvent
from gateway.jsonbody import request_object
from gateway.requests import build_request
from shared.audio.formats import parse_format
from shared.errors import InvalidRequest, ShuttingDown, TTSError

OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
                           "verse", "marin", "cedar"})
FORMATS = {"mp3": "mp3_44100_128", "wav": "wav_24000", "pcm": "pcm_24000", "opus": "opus_48000_64",
           "aac": "aac_24000_64", "flac": "flac_24000"}
_FORMAT_LIST = ", ".join(FORMATS)
MAX_INSTRUCTIONS = 4096  # OpenAI's own limit


async def speech(request: web.Request) -> web.StreamResponse:
    """``POST /v1/audio/speech``."""
    try:
        services = request.app[SERVICES]
        if services.draining:
            raise ShuttingDown("gateway is restarting; retry")
        principal = await principal_of(request)
        body = await _body(request)
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest("'input' is required and must be a non-empty string", field="input")
        fmt = parse_format(_format(body.get("response_format")))
        stream_format = body.get("stream_format") or "audio"
        if stream_format not in ("audio", "sse"):
            raise InvalidRequest("'stream_format' must be 'audio' or 'sse'", field="stream_format")
        options: dict[str, Any] = {}
        speed = body.get("speed")
        if speed is not None:
            if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
                raise InvalidRequest("'speed' must be a number from 0.25 to 4.0", field="speed")
            if speed != 1.0:
                options["speed"] = float(speed)
        instructions = body.get("instructions")
        if instructions is not None and (not isinstance(instructions, str) or len(instructions) > MAX_INSTRUCTIONS):
            raise InvalidRequest(f"'instructions' must be a string of at most {MAX_INSTRUCTIONS} characters",
                                 field="instructions")
        voice = await _voice(request, body.get("voice"))
        model = body.get("model")
        req = await build_request(services.catalog, context_id=CONTEXT_ID, voice=voice,
                                  model=normalize_model(model if isinstance(model, str) else None),
                                  fmt=fmt.name, options=options, text=text, input_closed=True,
                                  trace_parent=request_carrier(request))
        headers = {}
        if instructions and instructions.strip():
            # No provider here takes a style prompt (ElevenLabs' TTS models and Piper have no such input);
            # dropping it silently would leave a client believing it was heard.
            headers["X-Instructions"] = f"ignored; provider {req.provider} takes no instructions"
        async with Utterance(services, api="openai", tenant=principal.key_id) as utt:
            await utt.start(req)
            if stream_format == "sse":
                return await stream_body(request, utt, fmt, content_type="text/event-stream", render=_sse_delta,
                                         epilogue=_sse({"type": "speech.audio.done", "usage": {
                                             "input_tokens": len(text), "output_tokens": 0,
                                             "total_tokens": len(text)}}), headers=headers)
            return await stream_body(request, utt, fmt, content_type=fmt.content_type,
                                     render=lambda ev: ev.audio, headers=headers)
    except TTSError as e:
        return openai_error(e)


async def _body(request: web.Request) -> dict[str, Any]:
    return await request_object(request)


def _format(name: Any) -> str:
    if name is None:
        return FORMATS["mp3"]
    if not isinstance(name, str):  # a list or object is unhashable: it used to escape as a 500
        raise InvalidRequest(f"response_format must be one of {_FORMAT_LIST}", field="response_format")
    if name not in FORMATS:
        raise InvalidRequest(f"response_format must be one of {_FORMAT_LIST} (got {name!r})",
                             field="response_format")
    return FORMATS[name]


async def _voice(request: web.Request, voice: Any) -> str | None:
    """The catalogue voice for an OpenAI ``voice``; None means the deployment's default."""
    if isinstance(voice, dict):  # newer API: {"id": "..."} for custom voices
        voice = voice.get("id")
    if voice is None or voice == "":
        return None
    if not isinstance(voice, str):
        raise InvalidRequest("'voice' must be a string", field="voice")
    if voice.lower() in OPENAI_VOICES:
        mapped = openai_voice_map(request.app[SERVICES].settings.openai_voices).get(voice.lower())
        if mapped:
            return mapped
        snap = await request.app[SERVICES].catalog.snapshot()
        return voice if voice in snap.voices else None
    return voice


def openai_voice_map(entries: tuple[str, ...]) -> dict[str, str]:
    """``OPENAI_VOICES`` (``name=voice_id`` items, validated at start) as a dict keyed by lower-case name."""
    return {name.strip().lower(): vid.strip() for name, vid in (e.split("=", 1) for e in entries)}


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _sse_delta(ev: AudioEvent) -> bytes:
    return _sse({"type": "speech.audio.delta", "audio": base64.b64encode(ev.audio).decode("ascii")})
