"""Every output format on every compatible endpoint decodes to audio of the right rate and length."""

from __future__ import annotations

import base64
import json

import pytest
from emulator.synth import decode_text

from shared.audio.analysis import decode_to_pcm16, rms
from shared.audio.formats import parse_format
from tests.compat.conftest import EL_VOICE
from tests.compat.elclient import ElClient

TEXT = "Formats all sound alike."
SECONDS = len(TEXT) * 0.060  # the emulator's 60 ms per character
FORMATS = ["pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000",
           "alaw_8000", "wav_16000", "wav_24000", "wav_48000", "mp3_44100_128", "mp3_22050_32", "mp3_24000_48",
           "opus_48000_32", "opus_48000_64", "opus_48000_96", "opus_48000_128", "opus_48000_192",
           "aac_24000_64", "flac_24000", "flac_16000"]


def check(audio: bytes, name: str, seconds: float = SECONDS, text: str | None = TEXT) -> None:
    """Decode ``audio`` as ``name``: right rate, right length, and (lossless-enough codecs) right text."""
    fmt = parse_format(name)
    if fmt.codec == "wav":
        assert audio.count(b"RIFF") == 1 and audio.startswith(b"RIFF"), "exactly one WAV header, first"
    pcm, rate = decode_to_pcm16(audio, fmt)
    assert rate == fmt.sample_rate
    got = len(pcm) / 2 / rate
    # MP3: LAME's delay and padding. AAC: ADTS cannot signal the encoder's priming (up to 2 x 1024
    # samples more). Opus (Ogg pre-skip) and FLAC are sample-exact.
    tolerance = {"mp3": 0.12, "aac": 2 * 1024 / rate + 0.01}.get(fmt.codec, 0.01)
    assert abs(got - seconds) < tolerance, (name, got, seconds)
    if text is not None and fmt.codec not in ("mp3", "aac", "opus"):
        assert decode_text(pcm, rate) == text  # the emulator's tone code survives only lossless codecs


@pytest.mark.parametrize("name", FORMATS)
async def test_http_stream(el, name: str) -> None:
    url = f"{el.base}/v1/text-to-speech/{EL_VOICE}/stream?output_format={name}"
    async with el.http.post(url, json={"text": TEXT}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"] == parse_format(name).content_type
        check(await r.read(), name)


@pytest.mark.parametrize("name", ["pcm_22050", "ulaw_8000", "wav_24000", "mp3_44100_128", "opus_48000_64",
                                  "aac_24000_64", "flac_24000"])
async def test_http_stream_with_timestamps(el, name: str) -> None:
    url = f"{el.base}/v1/text-to-speech/{EL_VOICE}/stream/with-timestamps?output_format={name}"
    async with el.http.post(url, json={"text": TEXT}) as r:
        lines = [json.loads(x) for x in (await r.read()).splitlines() if x.strip()]
    check(b"".join(base64.b64decode(x["audio_base64"]) for x in lines), name)


@pytest.mark.parametrize("name", FORMATS)
async def test_multi_stream_websocket(el, name: str) -> None:
    async with ElClient.connect(el.base, el.http, voice=EL_VOICE, output_format=name) as c:
        await c.send(text=TEXT, context_id="f", flush=True)
        await c.send(context_id="f", close_context=True)
        await c.pump_until(lambda c: c.final("f"))
    check(c.get("f").audio, name)


@pytest.mark.parametrize("name", ["pcm_44100", "alaw_8000", "mp3_22050_32", "wav_16000", "opus_48000_128"])
async def test_single_stream_websocket(el, name: str) -> None:
    async with ElClient.connect(el.base, el.http, multi=False, voice=EL_VOICE, output_format=name) as c:
        await c.send(text=" ")
        await c.send(text=TEXT)
        await c.send(text="")
        assert await c.drain_until_closed() == 1000
    check(c.get(None).audio, name)


@pytest.mark.parametrize(("response_format", "name"), [("pcm", "pcm_24000"), ("wav", "wav_24000"),
                                                       ("mp3", "mp3_44100_128"), ("opus", "opus_48000_64"),
                                                       ("aac", "aac_24000_64"), ("flac", "flac_24000")])
async def test_openai_speech(el, response_format: str, name: str) -> None:
    async with el.http.post(f"{el.base}/v1/audio/speech",
                            json={"model": "tts-1", "input": TEXT, "voice": "alloy",
                                  "response_format": response_format}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"] == parse_format(name).content_type
        check(await r.read(), name)


@pytest.mark.parametrize("name", ["opus_48000_64", "aac_24000_64", "flac_24000"])
async def test_with_timestamps_in_compressed_formats_times_the_audio(el, name: str) -> None:
    """Alignment from the stream's own framing: the last character ends where the decoded audio does."""
    url = f"{el.base}/v1/text-to-speech/{EL_VOICE}/with-timestamps?output_format={name}"
    async with el.http.post(url, json={"text": TEXT * 3}) as r:
        obj = await r.json()
    audio = base64.b64decode(obj["audio_base64"])
    check(audio, name, seconds=3 * SECONDS, text=TEXT * 3)
    ends = obj["alignment"]["character_end_times_seconds"]
    assert ends == sorted(ends)
    assert ends[-1] == pytest.approx(3 * SECONDS, abs=0.05)


@pytest.mark.parametrize("name", ["pcm_8000", "pcm_48000", "ulaw_8000", "wav_22050", "mp3_44100_128",
                                  "opus_48000_32", "aac_24000_64", "flac_22050"])
async def test_local_voice_formats(local, name: str) -> None:
    """The local Piper voice (22.05 kHz) resampled/encoded to each format: real speech, right rate."""
    url = f"{local.base}/v1/text-to-speech/joe/stream?output_format={name}"
    async with local.http.post(url, json={"text": "Hello from the local voice."}) as r:
        assert r.status == 200
        audio = await r.read()
    fmt = parse_format(name)
    if fmt.codec == "wav":
        assert audio.count(b"RIFF") == 1 and audio.startswith(b"RIFF")
    pcm, rate = decode_to_pcm16(audio, fmt)
    assert rate == fmt.sample_rate
    assert 0.8 < len(pcm) / 2 / rate < 4.0
    assert rms(pcm) > 0.01


@pytest.mark.parametrize("response_format", ["opus", "aac", "flac"])
async def test_local_voice_in_openai_compressed_formats_is_heard(local, response_format: str) -> None:
    """Decoded back and transcribed: pocketsphinx hears the words through each codec."""
    import pocketsphinx  # the `test` extra

    from shared.audio.resample import StreamResampler

    async with local.http.post(f"{local.base}/v1/audio/speech", json={
            "model": "tts-1", "voice": "alloy", "response_format": response_format,
            "input": "Hello world, this is a test of the speech system."}) as r:
        assert r.status == 200
        audio = await r.read()
    pcm, rate = decode_to_pcm16(audio, parse_format({"opus": "opus_48000_64", "aac": "aac_24000_64",
                                                     "flac": "flac_24000"}[response_format]))
    resampler = StreamResampler(rate, 16000)
    pcm16k = resampler.process(pcm) + resampler.flush()
    decoder = pocketsphinx.Decoder(samprate=16000, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(pcm16k, full_utt=True)
    decoder.end_utt()
    heard = set(decoder.hyp().hypstr.lower().split()) if decoder.hyp() else set()
    assert len(heard & {"hello", "world", "this", "is", "test", "speech", "system"}) >= 4, heard
