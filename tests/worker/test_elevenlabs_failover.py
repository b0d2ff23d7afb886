"""Failover after audio went out: the context continues on another socket from the first word not heard.

The emulator voices each character as its own tone pair, so decoding the audio gives back exactly the
text the listener heard: a repeated or a missing word shows up character for character.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from emulator.synth import decode_text
from worker.providers.elevenlabs.context import UpstreamContext

from shared.audio import ulaw_decode
from shared.errors import UpstreamDisconnected
from tests.worker.elevenlabs_fixtures import collect, emulator, provider, request

TEXT = ("The first sentence goes out on the first socket. The second one is cut halfway by the fault. "
        "The third sentence must still be heard exactly once.")

FAULTS = {
    "drop_after_chunks": ("dropped", "upstream_disconnected"),
    "close_1008_after_chunks": ("server_error", "upstream_disconnected"),
    "stall_after_chunks": ("stalled", "upstream_timeout"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_mid_utterance_resumes_from_the_first_unheard_word(fault: str) -> None:
    async with emulator(realtime_factor=8.0, chunk_ms=130) as emu, \
            provider(emu, upstream_first_audio_timeout_s=0.6) as p:
        emu.set_config(None, **{fault: 4, "fault_sockets": 1})
        stream = await p.open_stream(request())
        await stream.send_text(TEXT, flush=True)
        await stream.end_input()
        out = await collect(stream)
        await stream.cancel()
        assert out.error is None, out.error
        assert out.text() == TEXT  # every character once, in order: no repeat, no gap
        # The timing the listener got names every character once too (the held word's is not repeated).
        assert "".join("".join(c.alignment["chars"]) for c in out.chunks if c.alignment) == TEXT
        assert isinstance(stream, UpstreamContext)
        [failover] = stream.failovers
        assert (failover["reason"], failover["cause"]) == FAULTS[fault]
        at = failover["at_char"]
        assert 0 < at < len(TEXT) and TEXT[at - 1] == " "  # resumed at a word's start
        assert stream.rebilled_chars == len(TEXT) - at
        assert emu.stats.faults_fired[fault.removesuffix("_after_chunks")] == 1


async def test_text_sent_after_the_failover_follows_on_the_new_socket() -> None:
    async with emulator(realtime_factor=8.0, chunk_ms=130) as emu, provider(emu) as p:
        emu.set_config(None, drop_after_chunks=3, fault_sockets=1)
        stream = await p.open_stream(request())
        await stream.send_text(TEXT, flush=True)
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            assert isinstance(stream, UpstreamContext)
            if stream.failovers and len(chunks) == 6:
                await stream.send_text(" And a late tail.", flush=True)
                await stream.end_input()
        await stream.cancel()
        out = b"".join(c.audio for c in chunks)
        assert decode_text(out, 24000) == TEXT + " And a late tail."


async def test_failovers_are_bounded_then_the_context_fails() -> None:
    async with emulator(realtime_factor=8.0, chunk_ms=130) as emu, \
            provider(emu, failover_max_per_context=1) as p:
        emu.set_config(None, drop_after_chunks=2, fault_sockets=2)
        stream = await p.open_stream(request())
        await stream.send_text(TEXT, flush=True)
        await stream.end_input()
        out = await collect(stream)
        await stream.cancel()
        assert isinstance(out.error, UpstreamDisconnected) and out.error.details["audio_sent"] is True
        assert isinstance(stream, UpstreamContext) and len(stream.failovers) == 1
        assert TEXT.startswith(out.text())  # what was heard is a clean prefix: nothing twice


async def test_failover_off_keeps_the_old_behaviour() -> None:
    async with emulator(realtime_factor=8.0, chunk_ms=130) as emu, \
            provider(emu, failover_max_per_context=0) as p:
        emu.set_config(None, drop_after_chunks=3, fault_sockets=1)
        stream = await p.open_stream(request())
        await stream.send_text(TEXT, flush=True)
        await stream.end_input()
        out = await collect(stream)
        await stream.cancel()
        assert isinstance(out.error, UpstreamDisconnected)
        assert TEXT.startswith(out.text())


@pytest.mark.parametrize(("fmt", "options"), [
    ("pcm_16000", {"sync_alignment": True}),  # timing on every chunk instead of the generation's first
    ("ulaw_8000", {}),  # one byte per sample
    ("wav_22050", {}),  # re-encoded here: the encoder carries on across the failover
])
async def test_failover_in_other_formats_and_alignment_modes(fmt: str, options: dict[str, bool]) -> None:
    async with emulator(realtime_factor=8.0, chunk_ms=130) as emu, provider(emu) as p:
        emu.set_config(None, close_1008_after_chunks=5, fault_sockets=1)
        stream = await p.open_stream(request(fmt=fmt, sync_alignment=options.get("sync_alignment")))
        await stream.send_text(TEXT, flush=True)
        await stream.end_input()
        out = await collect(stream)
        await stream.cancel()
        assert out.error is None, out.error
        audio = out.audio
        if fmt.startswith("ulaw"):
            audio = ulaw_decode(audio)
        elif fmt.startswith("wav"):
            audio = audio[44:]
        rate = int(fmt.split("_")[1])
        assert decode_text(audio, rate) == TEXT
        assert isinstance(stream, UpstreamContext) and len(stream.failovers) == 1
        # Alignment still describes the audio that went out: every character once, in order.
        assert "".join("".join(c.alignment["chars"]) for c in out.chunks if c.alignment) == TEXT


async def test_mp3_upstream_cannot_be_cut_by_sample_so_it_fails_as_before() -> None:
    async with emulator(realtime_factor=8.0, chunk_ms=130) as emu, provider(emu) as p:
        emu.set_config(None, drop_after_chunks=3, fault_sockets=1)
        stream = await p.open_stream(request(fmt="mp3_44100_128"))
        await stream.send_text(TEXT, flush=True)
        await stream.end_input()
        out = await collect(stream)
        await stream.cancel()
        assert isinstance(out.error, UpstreamDisconnected) and out.chunks


async def test_unreachable_upstream_hands_the_rest_to_the_local_voice() -> None:
    """FAILOVER_LOCAL_VOICE: the socket drops and no handshake succeeds afterwards (429s)."""
    import pocketsphinx  # the `test` extra
    from worker.providers.elevenlabs import ElevenLabsProvider
    from worker.providers.local import LocalProvider

    from tests.worker.elevenlabs_fixtures import el_settings

    async with emulator(realtime_factor=8.0, chunk_ms=130) as emu:
        p = ElevenLabsProvider(el_settings(upstream_first_audio_timeout_s=1.0, upstream_slot_wait_s=1.0,
                                           failover_local_voice=True), base_url=emu.http_url)
        p.use_fallback(LocalProvider(threads=1, max_streams=2), owned=True)
        await p.start()
        try:
            # The prewarmed socket took the bucket's only token: every later handshake is refused.
            emu.set_config(None, drop_after_chunks=6, fault_sockets=1, handshake_rate=0.001, handshake_burst=1)
            stream = await p.open_stream(request(fmt="pcm_16000"))
            await stream.send_text(TEXT, flush=True)
            await stream.end_input()
            out = await collect(stream)
            await stream.cancel()
        finally:
            await p.close()
    assert out.error is None, out.error
    assert isinstance(stream, UpstreamContext)
    [failover] = stream.failovers
    at = failover["at_char"]
    assert failover["to"] == "local" and 0 < at < 40
    assert stream.billed_delta == 0  # the rest was billed once, on the socket that dropped
    spc = 960  # 60 ms per character at 16 kHz
    upstream, local = out.audio[:at * spc * 2], out.audio[at * spc * 2:]
    assert decode_text(upstream, 16000) == TEXT[:at]  # the emulator's part, nothing of it twice
    decoder = pocketsphinx.Decoder(samprate=16000, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(local, full_utt=True)
    decoder.end_utt()
    heard = decoder.hyp().hypstr.lower().split() if decoder.hyp() else []
    expected = {"second", "third", "sentence", "socket", "fault", "heard", "once"}
    assert len(set(heard) & expected) >= 3, heard


def test_local_voice_fallback_is_refused_at_start_when_the_voice_is_not_installed(tmp_path: Path) -> None:
    """A worker without Piper (its import blocked in a fresh interpreter) refuses FAILOVER_LOCAL_VOICE at once."""
    script = (
        "import sys; sys.modules['piper'] = None\n"  # what `import piper` does when it is not installed
        "from shared.settings import Settings\n"
        "from worker.providers.registry import build_providers\n"
        "build_providers(Settings.from_env({'PROVIDERS': 'elevenlabs', 'FAILOVER_LOCAL_VOICE': 'on',"
        " 'ELEVENLABS_API_KEY': 'k', 'DEFAULT_VOICE': 'v'}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["services", "."])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60,
                          cwd=Path(__file__).resolve().parents[2], check=False)
    assert done.returncode != 0
    assert "SettingsError: FAILOVER_LOCAL_VOICE is on but the local voice is not installed" in done.stderr
