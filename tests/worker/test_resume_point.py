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
    rp.take(*chunk("xxx"))  # the listener has 180 ms: a hold is affordable while chunks come at once
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


def _paced(rp: ResumePoint, text: str, chunk_chars: int, every_s: float) -> list[tuple[float, int]]:
    """Feed ``text`` as chunks of ``chunk_chars`` arriving every ``every_s``; (arrival, bytes out) per chunk."""
    audio, align = chunk(text)
    per = chunk_chars * 60 * MS
    out = []
    for i, start in enumerate(range(0, len(audio), per)):
        chars = text[i * chunk_chars:(i + 1) * chunk_chars]
        a = {"chars": list(chars), "charStartTimesMs": align["charStartTimesMs"][:len(chars)],
             "charDurationsMs": align["charDurationsMs"][:len(chars)]}
        released, _ = rp.take(audio[start:start + per], a, now=i * every_s)
        out.append((i * every_s, len(released)))
    return out


def test_an_upstream_at_real_time_pace_is_never_held_back_from_a_listener_it_would_starve() -> None:
    # Words that straddle every chunk boundary, chunks arriving exactly as fast as they play.
    text = "Thanks for calling, how can I help you with your order today? " * 3
    rp = point(text)
    play_start, played_ms = None, 0.0
    for at, nbytes in _paced(rp, text, chunk_chars=8, every_s=0.48):
        if nbytes == 0:
            continue
        if play_start is None:
            play_start = at
        late_ms = at * 1000 - (play_start * 1000 + played_ms)
        assert late_ms <= 20, f"the listener ran dry {late_ms:.0f} ms before the audio released at {at:.2f} s"
        played_ms += nbytes / MS
    assert rp.can_resume()  # still tracked: a failover resumes where the listener is


def test_an_upstream_ahead_of_real_time_still_releases_up_to_word_ends() -> None:
    text = " ".join(f"w{i:03d}" for i in range(40)) + " "
    rp = point(text)
    released = 0
    for i, (_, nbytes) in enumerate(_paced(rp, text, chunk_chars=8, every_s=0.05)):
        released += nbytes
        if i >= 2:  # once the listener has a buffer, every release ends at a word's end ("wNNN ")
            assert released % (5 * 60 * MS) == 0
    assert rp.at_char == released // (60 * MS)


def test_audio_released_mid_character_for_the_listener_resumes_after_that_character() -> None:
    rp = point("Hello there world. ")
    rp.take(*chunk("Hello"), now=0.0)  # 300 ms, the listener's whole buffer
    audio = b"\x01\x00" * (24 * 210)  # " th" and half of "e": all of it is due before the next chunk
    align = {"chars": [" ", "t", "h", "e"], "charStartTimesMs": [0, 60, 120, 180], "charDurationsMs": [60] * 4}
    out, out_align = rp.take(audio, align, now=0.3)
    assert out == audio and out_align is not None and out_align["chars"] == [" ", "t", "h", "e"]
    assert rp.at_char == 9
    rp.resume("dropped", "upstream_disconnected")
    assert json.loads(rp.pending_messages()[0])["text"] == "re world. "
