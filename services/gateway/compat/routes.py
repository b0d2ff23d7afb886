"""Mount the compatible endpoints: ``add_routes(app)`` from the gateway's app factory."""

from __future__ import annotations

from aiohttp import web

from gateway.compat import el_http, openai_http, voices_models
from gateway.compat.el_ws_multi import multi_stream_ws
from gateway.compat.el_ws_single import stream_input_ws

_TTS = "/v1/text-to-speech/{voice_id}"


def add_routes(app: web.Application) -> None:
    """ElevenLabs WebSockets and HTTP, the voice/model listings, and OpenAI's speech endpoint."""
    r = app.router
    r.add_get(f"{_TTS}/stream-input", stream_input_ws)
    r.add_get(f"{_TTS}/multi-stream-input", multi_stream_ws)
    r.add_post(_TTS, el_http.tts_audio)
    r.add_post(f"{_TTS}/stream", el_http.tts_audio)
    r.add_post(f"{_TTS}/with-timestamps", el_http.tts_with_timestamps)
    r.add_post(f"{_TTS}/stream/with-timestamps", el_http.tts_stream_with_timestamps)
    r.add_get("/v1/voices", voices_models.list_voices)
    r.add_get("/v1/voices/{voice_id}", voices_models.get_voice)
    r.add_get("/v2/voices", voices_models.list_voices_v2)
    r.add_get("/v1/models", voices_models.list_models)
    r.add_post("/v1/audio/speech", openai_http.speech)
