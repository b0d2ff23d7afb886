"""``normalizedAlignment`` is the provider's normalized-text timing where it sends one, end to end.

ElevenLabs sends ``alignment`` (the text as sent) and ``normalizedAlignment`` (the text as spoken:
"42" read as " forty-two", chunks usually starting with a space). The worker keeps both, and every
edge renders each under its own name. The emulator voices text as written (no normaliser), so the
frames here are shaped like a real capture (elevenlabs/elevenlabs-docs #76).
"""

from __future__ import annotations

import json

from gateway.compat import el_messages
from gateway.compat.alignment import AlignmentJson, absolute_pair
from worker.providers.elevenlabs.messages import parse_frame

ORIGINAL = {"chars": list("Room 42"), "charStartTimesMs": [0, 50, 100, 150, 200, 250, 400],
            "charDurationsMs": [50, 50, 50, 50, 50, 150, 200]}
SPOKEN = " Room forty-two"
NORMALIZED = {"chars": list(SPOKEN), "charStartTimesMs": [i * 40 for i in range(len(SPOKEN))],
              "charDurationsMs": [40] * len(SPOKEN)}


def _upstream_frame(normalized: dict[str, object] | None) -> str:
    return json.dumps({"audio": "AAAAAA==", "isFinal": None, "alignment": ORIGINAL,
                       "normalizedAlignment": normalized, "contextId": "c1"})


def test_the_worker_keeps_both_and_the_websocket_edge_sends_each_under_its_name() -> None:
    frame = parse_frame(_upstream_frame(NORMALIZED))
    assert frame.alignment is not None and frame.alignment["chars"] == ORIGINAL["chars"]
    assert frame.alignment["normalized"]["chars"] == list(SPOKEN)
    sent = json.loads(next(el_messages.audio_frames(b"\x00\x00", frame.alignment, "c1")))
    assert sent["alignment"] == ORIGINAL  # the text as the client sent it, nothing extra
    assert "".join(sent["normalizedAlignment"]["chars"]) == SPOKEN
    assert len(sent["normalizedAlignment"]["charStartTimesMs"]) == len(SPOKEN)  # equal-length arrays (LiveKit)


def test_without_a_distinct_normalized_alignment_both_names_carry_the_same() -> None:
    for normalized in (None, ORIGINAL):
        frame = parse_frame(_upstream_frame(normalized))
        assert frame.alignment is not None and "normalized" not in frame.alignment
        sent = json.loads(next(el_messages.audio_frames(b"\x00\x00", frame.alignment, "c1")))
        assert sent["alignment"] == sent["normalizedAlignment"] == ORIGINAL


def test_http_forms_keep_them_apart_in_absolute_seconds() -> None:
    frame = parse_frame(_upstream_frame(NORMALIZED))
    al, normalized = absolute_pair(frame.alignment, 1.5)
    assert al is not None and normalized is not None
    assert "".join(al["characters"]) == "Room 42" and "".join(normalized["characters"]) == SPOKEN
    assert normalized["character_start_times_seconds"][0] == 1.5
    whole = AlignmentJson()
    whole.add(al, normalized)
    whole.add(*absolute_pair({"chars": list(" ok"), "charStartTimesMs": [0, 10, 20],
                              "charDurationsMs": [10, 10, 10]}, 3.0))
    obj = json.loads(b'{"audio_base64":""' + whole.render())
    assert "".join(obj["alignment"]["characters"]) == "Room 42 ok"
    assert "".join(obj["normalized_alignment"]["characters"]) == SPOKEN + " ok"
    assert obj["normalized_alignment"]["character_start_times_seconds"][-3:] == [3.0, 3.01, 3.02]
