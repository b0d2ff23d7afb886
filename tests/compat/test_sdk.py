"""The unmodified official ``elevenlabs`` SDK against the gateway, only its base URL changed.

HTTP through ``AsyncElevenLabs`` (stream, stream_with_timestamps, convert, convert_with_timestamps,
voices, models); the WebSocket helper ``convert_realtime`` (sync client only) over TLS, since it
always dials ``wss://`` — with a self-signed certificate made by ``openssl`` for this test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from elevenlabs import VoiceSettings
from elevenlabs.client import AsyncElevenLabs, ElevenLabs
from emulator.synth import decode_text
from gateway.__main__ import ssl_context
from gateway.app import create_app

from shared.audio.analysis import decode_to_pcm16
from shared.audio.formats import parse_format
from shared.settings import Settings
from tests.compat.conftest import EL_VOICE, el_stack, idle_on_exit
from tests.conftest import fast_settings
from tests.support.stack import running_worker

TEXT = "The official SDK only changes its base URL."
# The SDK itself reads the deprecated ConnectionClosed.code of websockets >= 14 after every close.
pytestmark = pytest.mark.filterwarnings("ignore:ConnectionClosed.code is deprecated:DeprecationWarning")


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    """The SDK's HTTP client, closed after the test (the SDK leaves its own default one open)."""
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
def el_sdk(el, http_client: httpx.AsyncClient) -> AsyncElevenLabs:  # type: ignore[no-untyped-def]
    """The async SDK pointed at the emulator-backed gateway."""
    return AsyncElevenLabs(base_url=el.base, api_key="xi-anything", httpx_client=http_client)


async def test_sdk_stream(el_sdk: AsyncElevenLabs) -> None:
    audio = b"".join([c async for c in el_sdk.text_to_speech.stream(
        EL_VOICE, text=TEXT, model_id="eleven_flash_v2_5", output_format="pcm_16000",
        voice_settings=VoiceSettings(stability=0.5, similarity_boost=0.75))])
    assert decode_text(audio, 16000) == TEXT


async def test_sdk_stream_mp3_default(el_sdk: AsyncElevenLabs) -> None:
    audio = b"".join([c async for c in el_sdk.text_to_speech.stream(EL_VOICE, text=TEXT)])
    pcm, rate = decode_to_pcm16(audio, parse_format("mp3_44100_128"))
    assert rate == 44100 and abs(len(pcm) / 2 / rate - len(TEXT) * 0.06) < 0.12


async def test_sdk_stream_with_timestamps(el_sdk: AsyncElevenLabs) -> None:
    chunks = [c async for c in el_sdk.text_to_speech.stream_with_timestamps(
        EL_VOICE, text=TEXT, output_format="pcm_22050")]
    assert len(chunks) >= 1
    audio = b"".join(base64.b64decode(c.audio_base_64) for c in chunks if c.audio_base_64)
    assert decode_text(audio, 22050) == TEXT
    chars = [ch for c in chunks if c.alignment for ch in c.alignment.characters]
    starts = [s for c in chunks if c.alignment for s in c.alignment.character_start_times_seconds]
    assert "".join(chars) == TEXT and starts == sorted(starts)
    assert starts[-1] == pytest.approx((len(TEXT) - 1) * 0.06, abs=0.02)


async def test_sdk_convert_and_convert_with_timestamps(el_sdk: AsyncElevenLabs) -> None:
    client = el_sdk
    audio = b"".join([c async for c in client.text_to_speech.convert(EL_VOICE, text=TEXT,
                                                                    output_format="ulaw_8000")])
    pcm, rate = decode_to_pcm16(audio, parse_format("ulaw_8000"))
    assert decode_text(pcm, rate) == TEXT
    res = await client.text_to_speech.convert_with_timestamps(EL_VOICE, text=TEXT, output_format="pcm_16000")
    assert decode_text(base64.b64decode(res.audio_base_64), 16000) == TEXT
    assert res.alignment is not None and "".join(res.alignment.characters) == TEXT


async def test_sdk_voices_and_models(el_sdk: AsyncElevenLabs) -> None:
    client = el_sdk
    voices = await client.voices.get_all()
    assert EL_VOICE in [v.voice_id for v in voices.voices]
    models = await client.models.list()
    assert models and models[0].model_id == "eleven_flash_v2_5" and models[0].can_do_text_to_speech


async def test_sdk_voices_search_pages_through_v2(redis_url: str, http_client: httpx.AsyncClient) -> None:
    """``client.voices.search`` (GET /v2/voices): pages of one, then a search, parsed by the SDK."""
    async with el_stack(redis_url, elevenlabs_voices=()) as stack:  # all four of the emulator's voices
        client = AsyncElevenLabs(base_url=stack.base, api_key="xi-anything", httpx_client=http_client)
        names, token = [], None
        for _ in range(10):
            page = await client.voices.search(page_size=1, next_page_token=token)
            names += [v.name for v in page.voices]
            assert page.total_count == 4
            if not page.has_more:
                assert page.next_page_token is None
                break
            token = page.next_page_token
        assert names == ["Adam", "George", "Rachel", "Sarah"]
        found = await client.voices.search(search="geor")
        assert [v.name for v in found.voices] == ["George"] and found.has_more is False


async def test_sdk_stream_opus(el_sdk: AsyncElevenLabs) -> None:
    audio = b"".join([c async for c in el_sdk.text_to_speech.stream(EL_VOICE, text=TEXT,
                                                                     output_format="opus_48000_96")])
    assert audio.startswith(b"OggS")
    pcm, rate = decode_to_pcm16(audio, parse_format("opus_48000_96"))
    assert rate == 48000 and abs(len(pcm) / 2 / rate - len(TEXT) * 0.06) < 0.01


async def test_sdk_errors_surface_as_api_errors(el_sdk: AsyncElevenLabs) -> None:
    from elevenlabs.core.api_error import ApiError

    with pytest.raises(ApiError) as info:
        _ = [c async for c in el_sdk.text_to_speech.stream(EL_VOICE, text=TEXT,
                                                           output_format="opus_48000_48")]  # type: ignore[arg-type]
    assert info.value.status_code == 422
    assert info.value.body["detail"]["status"] == "unsupported_format"


# ---- convert_realtime over TLS -----------------------------------------------------------------------
@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make a test certificate (Debian: apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@contextlib.asynccontextmanager
async def tls_gateway(settings: Settings) -> AsyncIterator[str]:
    """The gateway with the TLS context ``python -m gateway`` builds from TLS_CERT_FILE/TLS_KEY_FILE."""
    tls = ssl_context(settings)
    assert tls is not None
    runner = web.AppRunner(create_app(settings), shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _words(text: str) -> Iterator[str]:
    for word in text.split(" "):
        yield word + " "


async def test_sdk_convert_realtime_over_tls(redis_url: str, self_signed: tuple[Path, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the SDK's websockets client trusts it via OpenSSL
    async with el_stack(redis_url) as stack:
        settings = fast_settings(stack.settings.redis_url, tls_cert_file=str(cert), tls_key_file=str(key))
        async with tls_gateway(settings) as base:
            def speak() -> bytes:
                with httpx.Client() as hc:
                    client = ElevenLabs(base_url=base, api_key="xi-anything", httpx_client=hc)
                    return b"".join(client.text_to_speech.convert_realtime(
                        EL_VOICE, text=_words(TEXT), output_format="pcm_16000"))

            audio = await asyncio.to_thread(speak)
    assert decode_text(audio, 16000).strip() == TEXT


async def test_sdk_convert_realtime_on_the_local_voice(redis_url: str, self_signed: tuple[Path, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    settings = fast_settings(redis_url, providers=("local",), tls_cert_file=str(cert), tls_key_file=str(key))
    async with running_worker(settings) as worker, idle_on_exit(worker), tls_gateway(settings) as base:
        def speak() -> bytes:
            with httpx.Client() as hc:
                client = ElevenLabs(base_url=base, api_key="xi-anything", httpx_client=hc)
                return b"".join(client.text_to_speech.convert_realtime(
                    "joe", text=iter(["Hello ", "from ", "the ", "local ", "voice. "]),
                    output_format="mp3_44100_128"))

        audio = await asyncio.to_thread(speak)
    pcm, rate = decode_to_pcm16(audio, parse_format("mp3_44100_128"))
    assert rate == 44100 and 0.8 < len(pcm) / 2 / rate < 5
