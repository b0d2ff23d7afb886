"""The resume point's bookkeeping on its own: what is held, what is released, when it gives up."""

from __future__ import annotations

import json

from worker.providers.elevenlabs.resume import HOLD_MS, ResumePoint

MS = 48  # bytes per millisecond of pcm_24000


def chunk(text: str, ms_per_char: int = 60) -> tuple[bytes, dict[str, list[object]]]:
    """Audio and per-chunk alignment for ``text``, ``ms_per_char`` each."""
    return b"\x01\x00" * (24 * ms_per_char * len(text)), {
        "chars": list(text), "charStartTimesMs": [i * ms_per_char for i in range(len(text))],
        "charDurationsMs": [ms_per_char] * len(text)}


def point(text: str, **kw: int) -> ResumePoint:
    rp = ResumePoint("c", "pcm_24000", kw.get("max_bytes", 65536), kw.get("failovers", 2))
    rp.add_text(text, flush=False)
    return rp


def test_a_partial_word_is_held_until_its_chunk_completes_it_and_a_resume_starts_there() -> None:
    rp = point("Hello there world. ")
    out, _ = rp.take(*chunk("Hel"))
    assert len(out) == 3 * 60 * MS  # the first audio goes out at once (whole characters)
    out, align = rp.take(*chunk("lo the"))
    assert len(out) == 3 * 60 * MS and align is not None  # "lo " released, "the" held
    assert rp.at_char == 6
    rp.resume("dropped", "upstream_disconnected")
    assert json.loads(rp.pending_messages()[0])["text"] == "there world. "
    assert rp.failovers == [{"at_char": 6, "reason": "dropped", "cause": "upstream_disconnected"}]
    assert rp.rebilled_chars == len("there world. ")


def test_a_run_without_spaces_is_held_at_most_hold_ms() -> None:
    rp = point("x" * 100)
    rp.take(*chunk("x"))
    held_chars = int(HOLD_MS // 60)
    out, _ = rp.take(*chunk("x" * held_chars))
    assert out == b""
    out, _ = rp.take(*chunk("x"))
    assert len(out) == (held_chars + 1) * 60 * MS


def test_alignment_that_does_not_match_the_text_stops_tracking_and_loses_nothing() -> None:
    rp = point("Hello there. ")
    rp.take(*chunk("Hel"))
    audio, al = chunk("zzz qq")
    out, _ = rp.take(audio, al)
    assert not rp.can_resume()
    assert len(out) == len(audio)  # the held part went out with it


def test_audio_without_alignment_is_passed_through_and_ends_tracking() -> None:
    rp = point("Hello there. ")
    out, align = rp.take(b"\x00\x00" * 480, None)
    assert len(out) == 960 and align is None and not rp.can_resume()


def test_unspoken_text_over_the_bound_ends_tracking() -> None:
    rp = point("a" * 1000, max_bytes=1024)
    rp.add_text("b" * 100, flush=False)
    assert not rp.can_resume()


def test_mp3_upstream_is_never_tracked() -> None:
    rp = ResumePoint("c", "mp3_44100_128", 65536, 2)
    assert not rp.can_resume()


def test_a_whole_generations_timing_is_released_word_by_word_across_many_chunks() -> None:
    text = " ".join(f"w{i:03d}" for i in range(300)) + " "
    rp = point(text)
    audio, align = chunk(text)
    step = 250 * MS  # 250 ms chunks, the generation's timing all on the first one
    released = 0
    for i, start in enumerate(range(0, len(audio), step)):
        out, out_align = rp.take(audio[start:start + step], align if i == 0 else None)
        released += len(out)
        assert (out_align is not None) == (i == 0)  # passed on once, with the first audio
        if i and released < len(audio):
            assert released % (5 * 60 * MS) == 0  # up to a word's end ("wNNN ", 5 characters)
    assert rp.can_resume() and rp.at_char == released // (60 * MS)
    out, _ = rp.release()
    assert released + len(out) == len(audio) and rp.at_char == len(text)
