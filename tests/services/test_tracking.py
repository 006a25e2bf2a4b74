"""The cloud's tracker on the real model's detections of the shared video: ids per stream, in frame order."""

from __future__ import annotations

import sys

import pytest

from splitinfer.services.cloud.tracking import Tracker, TrackingUnavailableError
from splitinfer.services.cloud.zones import parse_zones
from splitinfer.v1 import inference_pb2

pytest.importorskip("supervision", reason="tracking needs the tracks extra: pip install -e '.[tracks]'")

FIRST, FRAMES = 60, 40  # a person walks in at frame 61
START_NS = 1_700_000_000 * 10**9
FRAME_NS = 100_000_000  # the shared video is 10 frames per second


def results_of(detections: list, stream_id: str = "cam", first_frame: int = 0,
               start_ns: int = START_NS) -> list[inference_pb2.InferenceResult]:
    """One InferenceResult per frame, as the cloud makes them (capture time, source size, detections)."""
    results = []
    for index, found in enumerate(detections):
        result = inference_pb2.InferenceResult(stream_id=stream_id, frame_id=first_frame + index, model="m")
        result.capture.capture_time.FromNanoseconds(start_ns + index * FRAME_NS)
        result.capture.image_width, result.capture.image_height = 768, 432
        result.detections.extend(inference_pb2.Detection(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, class_id=d.class_id,
                                                         label=d.label, score=d.score) for d in found)
        results.append(result)
    return results


@pytest.fixture(scope="module")
def video_detections(model, video) -> list:
    """The unsplit model's detections of FRAMES frames of the video from frame FIRST."""
    from splitinfer.services.edge.capture import FrameGrabber
    from splitinfer.services.whole_model import detect

    with FrameGrabber(str(video), max_frames=FIRST + FRAMES) as grabber:
        return [detect(model, frame.image)[0] for index, frame in enumerate(grabber.frames()) if index >= FIRST]


def track_ids(results: list[inference_pb2.InferenceResult]) -> list[list[int]]:
    return [[d.track_id for d in r.detections] for r in results]


def test_every_confirmed_detection_of_the_video_gets_a_track_id_that_holds_across_frames(video_detections) -> None:
    results = results_of(video_detections)
    tracker = Tracker()
    for result in results:
        tracker.observe(result)
    people = [[d for d in r.detections if d.label == "person"] for r in results]
    assert sum(map(len, people)) > FRAMES // 2, "the shared video should show people"
    # ByteTrack starts tracks from detections scoring 0.35 or more: at once in a tracker's first frame, later
    # on their second frame. The person who walks in is tracked from then on, in every frame.
    assert all(d.track_id > 0 for d in results[0].detections if d.score >= 0.35)
    first_seen = next(i for i, found in enumerate(people) if found)
    assert all(d.track_id > 0 for found in people[first_seen + 1:] for d in found)
    # A person seen in two consecutive frames at nearly the same place keeps its id.
    kept = moved = 0
    for before, after in zip(people, people[1:]):
        for a in after:
            match = max(before, key=lambda b: _iou(a, b), default=None)
            if match is not None and _iou(a, match) > 0.7 and a.track_id and match.track_id:
                kept += a.track_id == match.track_id
                moved += 1
    assert moved > 10 and kept >= 0.95 * moved
    # Ids are numbered per stream from 1, without gaps.
    ids = sorted({d.track_id for r in results for d in r.detections if d.track_id})
    assert ids == list(range(1, len(ids) + 1))


def test_streams_interleaved_as_a_batch_would_deliver_them_get_the_ids_each_gets_alone(video_detections) -> None:
    a_alone, b_alone = results_of(video_detections, "cam-a"), results_of(video_detections[::-1], "cam-b")
    for results in (a_alone, b_alone):
        tracker = Tracker()
        for result in results:
            tracker.observe(result)
    a, b = results_of(video_detections, "cam-a"), results_of(video_detections[::-1], "cam-b")
    together = Tracker()
    for result_a, result_b in zip(a, b):
        together.observe(result_b)
        together.observe(result_a)
    assert track_ids(a) == track_ids(a_alone) and track_ids(b) == track_ids(b_alone)


def test_a_resent_frame_is_not_tracked_and_a_restarted_edge_starts_the_tracks_afresh(video_detections) -> None:
    results = results_of(video_detections[:10])
    tracker = Tracker()
    first_events = tracker.observe(results[0])
    assert [e.kind for e in first_events] == [inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED]
    for result in results[1:6]:
        assert tracker.observe(result) == []
    resent = results_of(video_detections[5:6], first_frame=5, start_ns=START_NS + 5 * FRAME_NS)[0]
    assert tracker.observe(resent) == [] and all(d.track_id == 0 for d in resent.detections)
    for result in results[6:]:
        tracker.observe(result)
    assert all(d.track_id for d in results[9].detections)
    # The same edge restarted: frame ids from 0 again, later capture times.
    again = results_of(video_detections[:2], start_ns=START_NS + 3600 * 10**9)
    events = tracker.observe(again[0])
    assert [e.kind for e in events] == [inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED]
    assert events[0].frame_id == 0 and 1 in {d.track_id for d in again[0].detections}


def test_events_are_the_same_with_the_same_ids_when_the_same_frames_are_tracked_again(video_detections) -> None:
    zones = parse_zones("streams:\n  cam:\n    zones:\n      - name: all\n        polygon: [[0, 0], [768, 0], "
                        "[768, 432], [0, 432]]\n    lines:\n      - name: diagonal\n        points: [[0, 0], "
                        "[768, 432]]\n")
    runs = []
    for _ in range(2):
        tracker = Tracker(lambda: zones)
        runs.append([e for r in results_of(video_detections) for e in tracker.observe(r)])
    assert runs[0] == runs[1]
    kinds = {e.kind for e in runs[0]}
    assert inference_pb2.TRACK_EVENT_KIND_ZONE_ENTERED in kinds
    assert len({e.id for e in runs[0]}) == len(runs[0])


def test_a_cloud_asked_to_track_without_supervision_says_which_extra_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "supervision", None)  # what an install without the tracks extra sees
    with pytest.raises(TrackingUnavailableError, match=r"splitinfer\[tracks\].*--tracking off"):
        Tracker()


def _iou(a: inference_pb2.Detection, b: inference_pb2.Detection) -> float:
    w = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    h = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = w * h
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


LINE_ZONES = "streams:\n  cam:\n    lines:\n      - name: middle\n        points: [[436, 432], [436, 0]]\n"
ALL_ZONES = LINE_ZONES + "    zones:\n      - name: all\n        polygon: [[0, 0], [768, 0], [768, 432], [0, 432]]\n"
CUT = 12  # replica A tracks frames 0..11, B from 12 on: the walker crosses the line between (x 431 at 11, 441 at 12)


def _failover(video_detections, zones) -> tuple[list, list, list, list]:
    """(results, events) of one replica tracking every frame, and of A until CUT, then B resuming from A's last."""
    alone, reference = Tracker(lambda: zones), results_of(video_detections)
    expected = [alone.observe(r) for r in reference]
    results = results_of(video_detections)
    before, after = Tracker(lambda: zones), Tracker(lambda: zones)
    got = [before.observe(r) for r in results[:CUT]]
    last = inference_pb2.InferenceResult.FromString(results[CUT - 1].SerializeToString())  # as the bus gives it
    # The edge resends the frame A published but did not answer: B tracks it no more, then goes on.
    resent = results_of(video_detections[CUT - 1:CUT], first_frame=CUT - 1,
                        start_ns=START_NS + (CUT - 1) * FRAME_NS)[0]
    assert after.resume(last, resent) and after.observe(resent) == []
    assert not after.resume(last, results[CUT])  # once per stream: B knows it now
    got += [after.observe(r) for r in results[CUT:]]
    return reference, expected, results, got


def test_a_replica_resuming_from_the_last_published_result_goes_on_with_the_same_ids_events_and_counts(
        video_detections) -> None:
    reference, expected, results, got = _failover(video_detections, parse_zones(LINE_ZONES))
    # The same ids, events (with their stable ids) and counts as one replica tracking every frame.
    assert track_ids(results) == track_ids(reference)
    assert [e.name for e in got[CUT] if e.kind == inference_pb2.TRACK_EVENT_KIND_LINE_CROSSED] == ["middle"]
    assert got == expected
    assert [list(r.zone_counts) for r in results] == [list(r.zone_counts) for r in reference]


def test_a_track_lost_when_the_replica_died_is_not_resumed_and_its_zone_left_is_not_sent(video_detections) -> None:
    # docs/TRACKS.md: B resumes the tracks of the last result only. The knife, inside the zone and seen last at
    # frame 2, is lost (ByteTrack keeps it 30 frames): A would have said it left at frame 33; B cannot.
    reference, expected, results, got = _failover(video_detections, parse_zones(ALL_ZONES))
    assert track_ids(results) == track_ids(reference)
    missing = [e for events in expected for e in events if e not in [g for events in got for g in events]]
    assert [(e.frame_id, e.kind, e.label) for e in missing] == [(33, inference_pb2.TRACK_EVENT_KIND_ZONE_LEFT, "knife")]


def _tracked(detections: list, zones) -> list[inference_pb2.InferenceResult]:
    tracker, results = Tracker(lambda: zones), results_of(detections)
    for result in results:
        tracker.observe(result)
    return results


def test_a_stream_resumes_only_from_a_recent_result_of_the_same_edge_run(video_detections) -> None:
    results = _tracked(video_detections[:3], parse_zones(LINE_ZONES))
    later = results_of(video_detections[3:4], first_frame=3, start_ns=START_NS + 3 * FRAME_NS)[0]
    assert Tracker().resume(results[2], later)
    stale = results_of(video_detections[3:4], first_frame=3, start_ns=START_NS + 3600 * 10**9)[0]
    assert not Tracker().resume(results[2], stale)  # an hour later: its objects are gone
    restarted = results_of(video_detections[:1], start_ns=START_NS + 10 * FRAME_NS)[0]
    assert not Tracker().resume(results[2], restarted)  # frame ids from 0 again: a restarted edge
    assert not Tracker().resume(None, later)
    forged = inference_pb2.InferenceResult.FromString(results[2].SerializeToString())
    forged.detections[0].track_id = 2**32 - 1
    assert not Tracker().resume(forged, later)  # an id it could not continue from without overflowing
    tracker = Tracker()
    assert [e.kind for e in tracker.observe(stale)] == [inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED]
