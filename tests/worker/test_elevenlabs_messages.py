"""ElevenLabs frames, close classification, request options and audio conversion (no sockets)."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from worker.providers.elevenlabs import messages
from worker.providers.elevenlabs.options import AudioOut, build_spec, default_key, upstream_format

from shared.audio import parse_format
from shared.errors import (
    InvalidRequest,
    UnknownVoice,
    UnsupportedFormat,
    UpstreamBusy,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamRejected,
)
from tests.worker.elevenlabs_fixtures import el_settings


def test_client_messages_always_name_their_context() -> None:
    for raw in (messages.init_context("c1", {"speed": 1.1}, {"chunk_length_schedule": [50]}),
                messages.send_text("c1", "hi ", flush=True), messages.flush("c1"),
                messages.keep_alive("c1"), messages.close_context("c1")):
        assert json.loads(raw)["context_id"] == "c1"
    init = json.loads(messages.init_context("c1", None, None))
    assert init == {"text": " ", "context_id": "c1"}
    assert json.loads(messages.keep_alive("c1")) == {"text": "", "context_id": "c1"}
    assert json.loads(messages.send_text("c1", "hi")) == {"text": "hi", "context_id": "c1"}


def test_audio_frame_decoded_once_with_alignment() -> None:
    pcm = b"\x01\x02\x03\x04"
    frame = messages.parse_frame(json.dumps({
        "audio": base64.b64encode(pcm).decode(), "isFinal": None, "contextId": "c1",
        "alignment": {"chars": ["a"], "charStartTimesMs": [0], "charDurationsMs": [60]},
        "normalizedAlignment": {"chars": [" ", "a"], "charStartTimesMs": [0, 1], "charDurationsMs": [1, 59]}}))
    assert frame.context_id == "c1" and frame.audio == pcm and not frame.is_final
    assert frame.alignment == {"chars": ["a"], "charStartTimesMs": [0], "charDurationsMs": [60],
                               # the normalized text's own timing rides along (issue 17.4)
                               "normalized": {"chars": [" ", "a"], "charStartTimesMs": [0, 1],
                                              "charDurationsMs": [1, 59]}}


def test_frame_variants_snake_case_and_plural_alignment_keys() -> None:
    frame = messages.parse_frame(json.dumps({
        "audio": base64.b64encode(b"ab").decode(), "context_id": "c2", "alignment": None,
        "normalizedAlignment": {"chars": ["x"], "charsStartTimesMs": [5], "charsDurationsMs": [7]}}))
    assert frame.context_id == "c2"
    assert frame.alignment == {"chars": ["x"], "charStartTimesMs": [5], "charDurationsMs": [7]}
    final = messages.parse_frame('{"audio":null,"is_final":true,"context_id":"c2"}')
    assert final.is_final and final.audio is None


def test_bad_frames() -> None:
    with pytest.raises(messages.MalformedFrame):
        messages.parse_frame('{"audio": "UklGRg==", "isFinal": nul')
    with pytest.raises(messages.MalformedFrame):
        messages.parse_frame("[1, 2]")
    assert messages.parse_frame('{"audio": "***", "contextId": "c"}').bad_audio
    err = messages.parse_frame('{"message": "nope", "error": "max_active_conversations", "code": 1008}')
    assert err.error == "max_active_conversations" and err.message == "nope"


@pytest.mark.parametrize(("code", "reason", "error", "label", "cls", "retry"), [
    (None, "", None, "dropped", UpstreamDisconnected, True),
    (1008, "Maximum simultaneous contexts per WebSocket connection exceeded (5).", "max_active_conversations",
     "context_cap", UpstreamDisconnected, True),
    (1008, "A voice with voice_id 'x' does not exist.", "voice_not_found", "invalid_voice", UpstreamRejected,
     False),
    (1008, "", "quota_exceeded", "quota", UpstreamRejected, False),
    (1008, "Invalid API key", "invalid_api_key", "auth", UpstreamRejected, False),
    (1008, "voice_settings field must be provided in the first message", "invalid_input_message",
     "bad_settings", UpstreamRejected, False),
    (1008, "Have not received a new text input within the timeout of 20 seconds.", "input_timeout_exceeded",
     "inactivity", UpstreamDisconnected, True),
    (1008, "We are sorry, something went wrong. You are not charged for this request.", None,
     "server_error", UpstreamDisconnected, True),
    (1000, "", None, "closed", UpstreamDisconnected, True),
    (1008, "You must be authorized to use this endpoint: pass xi-api-key.", "invalid_api_key", "auth",
     UpstreamRejected, False),
    (1008, "The model is busy right now", None, "server_error", UpstreamDisconnected, True),
    (1008, "too_many_concurrent_requests", None, "busy", UpstreamBusy, True),
])
def test_close_classification(code: int | None, reason: str, error: str | None, label: str,
                              cls: type[UpstreamError], retry: bool) -> None:
    failure = messages.classify_close(code, reason, error)
    assert (failure.reason, type(failure.error), failure.retry) == (label, cls, retry)
    assert failure.for_context(True).details["audio_sent"] is True


def test_handshake_classification() -> None:
    assert isinstance(messages.classify_handshake(401).error, UpstreamRejected)
    assert isinstance(messages.classify_handshake(429).error, UpstreamBusy)
    assert messages.classify_handshake(None).retry


def test_socket_key_holds_everything_the_url_fixes() -> None:
    settings = el_settings(upstream_inactivity_timeout_s=180)
    spec = build_spec("v-1", "", "ulaw_8000", {"stability": 0.4},
                      {"sync_alignment": True, "auto_mode": True, "language_code": "de",
                       "apply_text_normalization": "off", "seed": 7, "chunk_length_schedule": [50, 80],
                       "speed": 1.1}, settings)
    url = urlsplit(spec.key.url("wss://api.elevenlabs.io/v1"))
    assert url.path == "/v1/text-to-speech/v-1/multi-stream-input"
    assert parse_qs(url.query) == {
        "model_id": ["eleven_flash_v2_5"], "output_format": ["ulaw_8000"], "inactivity_timeout": ["180"],
        "sync_alignment": ["true"], "auto_mode": ["true"], "language_code": ["de"],
        "apply_text_normalization": ["off"], "seed": ["7"]}
    assert spec.voice_settings == {"stability": 0.4, "speed": 1.1}
    assert spec.generation_config == {"chunk_length_schedule": [50, 80]}
    plain = build_spec("", "", "", {}, {}, settings)
    assert plain.key == default_key(settings) and plain.key != spec.key
    explicit_defaults = build_spec("", "", "pcm_24000", {}, {"apply_text_normalization": "auto",
                                                             "sync_alignment": False, "alignment": True}, settings)
    assert explicit_defaults.key == plain.key  # same URL, so the prewarmed sockets serve it


def test_request_validation() -> None:
    settings = el_settings()
    with pytest.raises(UnsupportedFormat):
        build_spec("v", "", "opus_48000_48", {}, {}, settings)
    with pytest.raises(UnknownVoice):
        build_spec("", "", "", {}, {}, el_settings(default_voice=""))
    for bad in ({"chunk_length_schedule": [10]}, {"seed": -1}, {"auto_mode": "yes"},
                {"apply_text_normalization": "maybe"}, {"speed": 3}):
        with pytest.raises(InvalidRequest):
            build_spec("v", "", "", {}, bad, settings)


def test_formats_not_streamed_natively_are_converted_from_pcm() -> None:
    assert upstream_format(parse_format("wav_16000")) == "pcm_16000"
    assert upstream_format(parse_format("mp3_24000_48")) == "pcm_24000"
    assert upstream_format(parse_format("ulaw_8000")) == "ulaw_8000"
    assert upstream_format(parse_format("mp3_44100_128")) == "mp3_44100_128"
    wav = AudioOut(parse_format("wav_16000"), "pcm_16000")
    first = wav.feed(b"\x00\x01" * 10)
    assert first[:4] == b"RIFF" and len(first) == 44 + 20


def test_pcm_chunks_stay_sample_aligned() -> None:
    out = AudioOut(parse_format("pcm_24000"), "pcm_24000")
    pieces = [out.feed(b"\x01\x02\x03"), out.feed(b"\x04"), out.feed(b"\x05\x06\x07"), out.finish()]
    assert [len(p) % 2 for p in pieces] == [0, 0, 0, 0]
    assert b"".join(pieces) == b"\x01\x02\x03\x04\x05\x06"
    ulaw = AudioOut(parse_format("ulaw_8000"), "ulaw_8000")
    assert ulaw.feed(b"\x01\x02\x03") == b"\x01\x02\x03"
