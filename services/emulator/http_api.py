"""ElevenLabs' HTTP TTS endpoints (whole, streamed, with timestamps) plus the voice and model lists."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from emulator.auth import key_accepted, key_from_request
from emulator.catalog import MODELS, VOICES, character_limit
from emulator.formats import DEFAULT_HTTP_FORMAT, OutputFormatError, parse_output_format
from emulator.generation import paced_chunks
from emulator.limits import TOO_MANY_CONCURRENT, too_many_concurrent_message
from emulator.protocol import ProtocolViolation, normalize_voice_settings, voice_not_found_message
from emulator.speech import AudioChunk
from emulator.state import STATE_KEY, EmulatorState
from shared.audio import AudioFormat


class ApiError(Exception):
    """An error answered as ``{"detail": {"status": ..., "message": ...}}``."""

    def __init__(self, http_status: int, status: str, message: str) -> None:
        """``status`` is ElevenLabs' code string, e.g. ``invalid_api_key``."""
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.message = message


@web.middleware
async def api_error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Render :class:`ApiError` the way ElevenLabs does."""
    try:
        return await handler(request)
    except ApiError as e:
        return web.json_response({"detail": {"status": e.status, "message": e.message}}, status=e.http_status)


@web.middleware
async def concurrency_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A TTS request holds one of the account's concurrent-request slots until its body is sent."""
    if request.method != "POST" or not request.path.startswith("/v1/text-to-speech/"):
        return await handler(request)
    state = request.app[STATE_KEY]
    limit = state.config.max_concurrent_requests
    if not state.concurrency.try_acquire(limit):
        assert limit is not None
        state.stats.concurrency_refusals["http"] += 1
        raise ApiError(429, TOO_MANY_CONCURRENT, too_many_concurrent_message(limit))
    state.stats.max_concurrent_requests_seen = max(
        state.stats.max_concurrent_requests_seen, state.concurrency.active
    )
    try:
        return await handler(request)
    finally:
        state.concurrency.release()


@dataclass(frozen=True)
class TtsRequest:
    """A validated TTS request."""

    text: str
    model_id: str | None
    output_format: AudioFormat


def _authorize(request: web.Request, state: EmulatorState) -> None:
    presented = key_from_request(request)
    if not key_accepted(state.config.api_key, presented):
        message = "Invalid API key" if presented else "Missing xi-api-key header."
        raise ApiError(401, "invalid_api_key", message)


async def _parse_tts(request: web.Request, state: EmulatorState, endpoint: str) -> TtsRequest:
    state.stats.http_requests[endpoint] += 1
    _authorize(request, state)
    voice_id = request.match_info["voice_id"]
    if voice_id in state.config.reject_voice_ids:
        raise ApiError(400, "voice_not_found", voice_not_found_message(voice_id))
    try:
        fmt = parse_output_format(request.query.get("output_format"), DEFAULT_HTTP_FORMAT)
    except OutputFormatError as e:
        raise ApiError(422, e.code, str(e)) from e
    try:
        body = await request.json(loads=json.loads)
    except ValueError as e:
        raise ApiError(422, "validation_error", "Request body must be a JSON object.") from e
    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", "Request body must be a JSON object.")
    text, model_id = body.get("text"), body.get("model_id")
    if not isinstance(text, str) or not text:
        raise ApiError(422, "validation_error", "Field 'text' is required and must be a non-empty string.")
    if model_id is not None and not isinstance(model_id, str):
        raise ApiError(422, "validation_error", "Field 'model_id' must be a string.")
    try:
        normalize_voice_settings(body.get("voice_settings"))
    except ProtocolViolation as e:
        raise ApiError(422, "validation_error", e.message) from e
    limit = character_limit(model_id)
    if len(text) > limit:
        raise ApiError(
            400,
            "max_character_limit_exceeded",
            f"This request's text has {len(text)} characters and exceeds the limit of {limit} characters.",
        )
    return TtsRequest(text, model_id, fmt)


def _headers(content_type: str | None = None) -> dict[str, str]:
    trace = uuid.uuid4().hex
    headers = {"x-trace-id": trace, "request-id": trace}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


async def _chunks(tts: TtsRequest, state: EmulatorState) -> list[AudioChunk]:
    loop_time = _now()
    state.stats.characters_synthesized += len(tts.text)
    return [c async for c in paced_chunks(tts.text, tts.output_format, state.config, loop_time)]


def _now() -> float:
    return asyncio.get_running_loop().time()


def _timestamps(chunk: AudioChunk, offset_s: float, audio: bytes) -> dict[str, Any]:
    alignment = chunk.http_alignment(offset_s)
    return {
        "audio_base64": base64.b64encode(audio).decode("ascii"),
        "alignment": alignment,
        "normalized_alignment": alignment,  # the emulator voices text as written
    }


async def tts(request: web.Request) -> web.StreamResponse:
    """``POST /v1/text-to-speech/{voice_id}``: the whole clip in one body."""
    state = request.app[STATE_KEY]
    req = await _parse_tts(request, state, "tts")
    audio = b"".join(c.audio for c in await _chunks(req, state))
    return web.Response(body=audio, headers=_headers(req.output_format.content_type))


async def tts_with_timestamps(request: web.Request) -> web.StreamResponse:
    """``POST .../with-timestamps``: one JSON object, alignment in absolute seconds."""
    state = request.app[STATE_KEY]
    req = await _parse_tts(request, state, "tts_with_timestamps")
    chunks = await _chunks(req, state)
    merged = AudioChunk(
        b"".join(c.audio for c in chunks),
        req.text,
        0,
        chunks[0].samples_per_char,
        chunks[0].sample_rate,
    )
    return web.json_response(_timestamps(merged, 0.0, merged.audio), headers=_headers())


async def _stream(
    request: web.Request, content_type: str, parts: AsyncGenerator[bytes, None]
) -> web.StreamResponse:
    response = web.StreamResponse(headers=_headers(content_type))
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async for part in parts:
            await response.write(part)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left mid-stream: nothing to report, the real API just stops too
    finally:
        await parts.aclose()
    return response


async def tts_stream(request: web.Request) -> web.StreamResponse:
    """``POST .../stream``: raw audio, chunked, each chunk written as soon as it is "generated"."""
    state = request.app[STATE_KEY]
    req = await _parse_tts(request, state, "tts_stream")
    # The real API sometimes cuts PCM mid-sample (vellum-assistant PR #37312): optionally do the same.
    split = state.config.http_split_samples and req.output_format.codec == "pcm"

    async def parts() -> AsyncGenerator[bytes, None]:
        carry = b""
        state.stats.characters_synthesized += len(req.text)
        async for chunk in paced_chunks(req.text, req.output_format, state.config, _now()):
            data = carry + chunk.audio
            carry, data = (data[-1:], data[:-1]) if split else (b"", data)
            if data:
                yield data
        if carry:
            yield carry

    return await _stream(request, req.output_format.content_type, parts())


async def tts_stream_with_timestamps(request: web.Request) -> web.StreamResponse:
    """``POST .../stream/with-timestamps``: newline-delimited JSON, one object per audio chunk."""
    state = request.app[STATE_KEY]
    req = await _parse_tts(request, state, "tts_stream_with_timestamps")

    async def parts() -> AsyncGenerator[bytes, None]:
        offset = 0.0
        state.stats.characters_synthesized += len(req.text)
        async for chunk in paced_chunks(req.text, req.output_format, state.config, _now()):
            yield json.dumps(_timestamps(chunk, offset, chunk.audio)).encode() + b"\n"
            offset += chunk.duration_s

    return await _stream(request, "application/json", parts())


async def list_voices(request: web.Request) -> web.StreamResponse:
    """``GET /v1/voices``."""
    state = request.app[STATE_KEY]
    state.stats.http_requests["voices"] += 1
    _authorize(request, state)
    return web.json_response({"voices": list(VOICES)})


async def list_models(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models`` (a bare JSON array, as the real endpoint returns)."""
    state = request.app[STATE_KEY]
    state.stats.http_requests["models"] += 1
    _authorize(request, state)
    return web.json_response(list(MODELS))


def add_routes(app: web.Application) -> None:
    """Register the HTTP API under ``/v1``."""
    app.router.add_post("/v1/text-to-speech/{voice_id}", tts)
    app.router.add_post("/v1/text-to-speech/{voice_id}/stream", tts_stream)
    app.router.add_post("/v1/text-to-speech/{voice_id}/with-timestamps", tts_with_timestamps)
    app.router.add_post("/v1/text-to-speech/{voice_id}/stream/with-timestamps", tts_stream_with_timestamps)
    app.router.add_get("/v1/voices", list_voices)
    app.router.add_get("/v1/models", list_models)
