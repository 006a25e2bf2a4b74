"""Track events and track ids as people and other programs read them: watch's lines, the JSON form, CloudEvents."""

from __future__ import annotations

import json
import re

import pytest

from splitinfer.results import event_from_cloudevent, event_to_cloudevent, event_to_line, result_to_line
from splitinfer.v1 import inference_pb2


def _crossing() -> inference_pb2.TrackEvent:
    event = inference_pb2.TrackEvent(id="a" * 32, stream_id="site-a/cam-1", frame_id=42,
                                     kind=inference_pb2.TRACK_EVENT_KIND_LINE_CROSSED, name="entrance", track_id=7,
                                     class_id=0, label="person", direction="forward", count=3)
    event.time.FromNanoseconds(1_700_000_000_123_000_000)
    return event


def test_a_result_line_names_the_track_ids_of_each_class() -> None:
    result = inference_pb2.InferenceResult(stream_id="cam-1", frame_id=9)
    result.detections.add(label="person", class_id=0, score=0.9, track_id=7)
    result.detections.add(label="person", class_id=0, score=0.8, track_id=3)
    result.detections.add(label="person", class_id=0, score=0.3)  # not (yet) a track
    result.detections.add(label="car", class_id=2, score=0.7)
    assert result_to_line(result) == "cam-1 #9 person x3 #3,7, car x1"


def test_an_event_line_says_who_did_what_where() -> None:
    line = event_to_line(_crossing())
    assert re.fullmatch(r"\d\d:\d\d:\d\d site-a/cam-1 #42 person #7 line_crossed entrance forward \(3 so far\)", line)
    left = inference_pb2.TrackEvent(stream_id="cam", frame_id=5, kind=inference_pb2.TRACK_EVENT_KIND_ZONE_LEFT,
                                    name="door", track_id=2, label="person", dwell_seconds=12.34, count=0)
    assert event_to_line(left) == "cam #5 person #2 zone_left door after 12.3 s (0 inside)"
    restarted = inference_pb2.TrackEvent(stream_id="cam", frame_id=0,
                                         kind=inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED)
    assert event_to_line(restarted) == "cam #0 tracks_restarted: track ids start afresh"


def test_an_event_goes_to_cloudevents_json_and_comes_back() -> None:
    event = _crossing()
    cloudevent = json.loads(json.dumps(event_to_cloudevent(event, "//splitinfer/cloud/test")))
    assert cloudevent["id"] == event.id and cloudevent["subject"] == "site-a/cam-1"
    assert cloudevent["type"] == "io.splitinfer.v1.TrackEvent.line_crossed"
    assert cloudevent["time"] == "2023-11-14T22:13:20.123Z"
    assert cloudevent["data"]["track_id"] == 7 and cloudevent["data"]["frame_id"] == "42"
    assert event_from_cloudevent(cloudevent) == event


@pytest.mark.parametrize("cloudevent", [{}, {"data": "x"}, {"data": {"kind": "NOT_A_KIND"}},
                                        {"data": {"frame_id": -1}}])
def test_something_else_on_the_tracks_subject_is_refused_with_a_value_error(cloudevent) -> None:
    with pytest.raises(ValueError):
        event_from_cloudevent(cloudevent)
