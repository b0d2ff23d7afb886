"""The hop breakdown (shared/hops.py) and its trip through the wire protocol, value by value."""

from __future__ import annotations

import math

from shared import hops, protocol


def test_hops_tile_the_path_and_are_never_negative() -> None:
    at = {name: 1000.0 + i * 0.001 for i, name in enumerate(hops.MARKS)}
    at[hops.ENQUEUE_START] = at[hops.ADMITTED]  # first attempt: no retry hop
    at[hops.GW_RECEIVED] = at[hops.PUBLISHED] - 0.0005  # the gateway read it before the ack came back
    at[hops.CLAIMED] = at[hops.ENQUEUED] - 0.0002  # a worker claimed it before the gateway read the reply
    got = hops.breakdown(at)
    assert list(got) == [h for h in hops.HOPS if h != hops.RETRY]
    assert got[hops.GATEWAY_RECEIVE] == 0.0 and math.isclose(got[hops.PUBLISH], 0.5)  # until the gateway had it
    assert got[hops.CLAIM] == 0.0 and math.isclose(got[hops.ENQUEUE], 1.8)  # until the worker had it
    assert all(v >= 0 for v in got.values())
    # No overlap: the hops add up to the path's two ends.
    assert math.isclose(sum(got.values()), (at[hops.CLIENT_SENT] - at[hops.RECEIVED]) * 1000, abs_tol=0.01)


def test_a_final_sent_before_the_first_frames_ack_still_tiles_the_path() -> None:
    # A busy worker's Final may leave before Redis acknowledged the first frame: no ``published`` mark.
    at = {name: 1000.0 + i * 0.001 for i, name in enumerate(hops.MARKS)}
    at[hops.ENQUEUE_START] = at[hops.ADMITTED]
    del at[hops.PUBLISHED]
    got = hops.breakdown(at)
    assert list(got) == [h for h in hops.HOPS if h != hops.RETRY]
    assert got[hops.GATEWAY_RECEIVE] == 0.0 and math.isclose(got[hops.PUBLISH], 2.0)  # until the gateway had it
    assert math.isclose(sum(got.values()), (at[hops.CLIENT_SENT] - at[hops.RECEIVED]) * 1000, abs_tol=0.01)


def test_a_retry_shows_as_its_own_hop_and_missing_marks_drop_their_hops() -> None:
    at = {hops.RECEIVED: 10.0, hops.ADMITTED: 10.001, hops.ENQUEUE_START: 10.5, hops.ENQUEUED: 10.5005}
    assert hops.breakdown(at) == {hops.ADMISSION: 1.0, hops.RETRY: 499.0, hops.ENQUEUE: 0.5}


def test_marks_from_the_wire_are_checked() -> None:
    marks = hops.Marks()
    marks.merge({hops.CLAIMED: 5.0, hops.RECEIVED: 1.0, "bogus": 2.0, hops.PUBLISHED: "soon",
                 hops.FIRST_AUDIO: float("nan"), hops.TEXT_SENT: True, hops.INPUTS_OPEN: 6})
    assert marks.at == {hops.CLAIMED: 5.0, hops.INPUTS_OPEN: 6.0}  # only known worker marks, finite numbers
    marks.merge(["not", "a", "dict"])
    assert len(marks.at) == 2


def test_final_timings_and_job_trace_round_trip_and_stay_optional() -> None:
    final = protocol.Final("j", "c", 1, 2, timings={hops.CLAIMED: 1.5})
    assert protocol.decode(protocol.encode(final)) == final
    old = protocol.Final("j", "c", 1, 2)  # what a worker without tracing sends
    assert protocol.decode(protocol.encode(old)).timings is None  # type: ignore[attr-defined]
    spec = protocol.JobSpec("j", "s", "c", "local", "v", "m", "pcm_16000",
                            trace={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    assert protocol.decode(protocol.encode(spec)) == spec
