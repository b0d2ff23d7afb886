"""Lossless mid-utterance failover through the whole stack: a fault after audio went out is not an error.

client → gateway → Redis → worker → emulator and back, each a separate process. The emulator drops,
stalls or 1008-closes the socket after a few audio chunks of a multi-sentence context; the listener
gets every word exactly once, gap-free sequence numbers, and a final that says where the failover
happened. The emulator voices each character as its own tone pair and :func:`decode_text` is its exact
transcriber (pocketsphinx hears words, not these tones): a repeated or missing word shows up
character for character, which is stricter than a word-level comparison with a recogniser's slack.
"""

from __future__ import annotations

import aiohttp
import pytest
from emulator.synth import decode_text

from tests.faults.support import assert_no_orphans, report, start_stack
from tests.support.procs import Procs
from tests.support.stack import NativeClient

SPEECH = ("The gateway streams this first sentence to the listener. Then the socket fails in the middle "
          "of the second sentence. A third sentence proves that nothing was lost and nothing was repeated.")
AFTER = 18  # audio chunks (5 characters each) on the socket before the fault fires: mid second sentence

FAULTS = {
    "drop_after_chunks": ("dropped", "upstream_disconnected"),  # TCP aborted, no close frame
    "close_1008_after_chunks": ("server_error", "upstream_disconnected"),  # ElevenLabs' generic 1008 close
    "stall_after_chunks": ("stalled", "upstream_timeout"),  # open, silent past the deadline
}


def _trigrams(words: list[str]) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + 3]) for i in range(len(words) - 2)]


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_mid_utterance_is_resumed_and_heard_once(procs: Procs, redis_url: str, fault: str) -> None:
    stack = await start_stack(procs, redis_url, emulator={"realtime_factor": 4, "chunk_ms": 300},
                              UPSTREAM_FIRST_AUDIO_TIMEOUT_S=1.0, POOL_MIN_SOCKETS=1)
    await stack.emu_config(**{fault: AFTER, "fault_sockets": 1})
    async with aiohttp.ClientSession() as http, NativeClient.connect(stack.base, http) as client:
        res = await client.speak("v", SPEECH, format="pcm_16000", timeout=30)
        after = await client.speak("after", "The pool healed.", format="pcm_16000", timeout=20)

    assert res.error is None and res.final is not None, res.events[-2:]
    assert res.seqs == list(range(len(res.frames))) and res.final["chunks"] == len(res.frames)
    heard = decode_text(res.audio, 16000)
    assert heard == SPEECH  # every character once, in order
    words = heard.split()
    assert len(words) == len(SPEECH.split()) and len(set(_trigrams(words))) == len(_trigrams(words))
    [failover] = res.final["failover"]
    at = failover["at_char"]
    assert (failover["reason"], failover["cause"]) == FAULTS[fault]
    assert 57 < at < 120 and SPEECH[at - 1] == " "  # a word's start, in the second sentence
    # Usage metering: the text after the resume point was billed on both sockets.
    assert res.final["billed_chars"] == len(SPEECH) + len(SPEECH) - at
    assert after.final is not None and "failover" not in after.final
    assert decode_text(after.audio, 16000) == "The pool healed."
    stats = await stack.emu_stats()
    assert stats["faults_fired"][fault.removesuffix("_after_chunks")] == 1
    assert not client.session_errors
    await assert_no_orphans(redis_url)
    report("failover", fault=fault, at_char=at, chunks=len(res.frames), rebilled_chars=len(SPEECH) - at,
           final={k: res.final[k] for k in ("chunks", "characters", "billed_chars", "failover", "duration_ms")})
