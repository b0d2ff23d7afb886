"""ElevenLabs audio frames: the text is the plain JSON encoding of the frame (the base64 is spliced in
without the JSON encoder, el_messages.audio_frames), split under the frame limit on sample boundaries."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from gateway.compat import el_messages

ALIGNMENT = {"chars": list('a"é\\\n'), "charStartTimesMs": [0, 10, 20, 30, 40], "charDurationsMs": [10] * 5}


def _expected(audio: bytes, alignment: dict[str, Any] | None, context_id: str | None) -> str:
    frame: dict[str, Any] = {"audio": base64.b64encode(audio).decode(), "isFinal": None,
                             "normalizedAlignment": alignment, "alignment": alignment}
    if context_id is not None:
        frame["contextId"] = context_id
    return json.dumps(frame, separators=(",", ":"))


def test_a_frame_is_the_json_encoding_of_its_fields() -> None:
    for audio in (b"", b"\x00", os.urandom(24_001)):
        for alignment in (None, ALIGNMENT):
            for context_id in (None, "ctx-1", 'quo"te é'):
                frames = list(el_messages.audio_frames(audio, alignment, context_id))
                assert frames == [_expected(audio, alignment, context_id)]
                assert json.loads(frames[0])["contextId" if context_id else "isFinal"] == context_id


def test_a_huge_chunk_splits_on_sample_boundaries_with_the_alignment_on_the_first_frame() -> None:
    audio = os.urandom(2 * el_messages.MAX_AUDIO_PER_FRAME + 7)
    frames = [json.loads(f) for f in el_messages.audio_frames(audio, ALIGNMENT, "c", sample_width=2)]
    assert len(frames) == 3
    pieces = [base64.b64decode(f["audio"]) for f in frames]
    assert b"".join(pieces) == audio and all(len(p) % 2 == 0 for p in pieces[:-1])
    assert frames[0]["alignment"] == ALIGNMENT and frames[1]["alignment"] is None and frames[2]["alignment"] is None
