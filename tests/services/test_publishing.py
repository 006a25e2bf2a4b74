"""ResultPublisher: each frame once to subscribers, a restarted edge's frames again, track events just before their result."""

from __future__ import annotations

import asyncio

import pytest

from splitinfer.services.cloud.publishing import ResultPublisher
from splitinfer.services.cloud.streams import StreamState
from splitinfer.services.cloud.subscribers import SubscriberHub
from splitinfer.v1 import inference_pb2
from tests.services.conftest import run


def _result(frame_id: int, capture_s: int, *boxes: tuple[float, float, float, float]) -> inference_pb2.InferenceResult:
    result = inference_pb2.InferenceResult(stream_id="cam", frame_id=frame_id)
    result.capture.capture_time.FromSeconds(capture_s)
    result.capture.image_width, result.capture.image_height = 640, 480
    for x1, y1, x2, y2 in boxes:
        result.detections.add(x1=x1, y1=y1, x2=x2, y2=y2, class_id=0, label="person", score=0.9)
    return result


async def _drain(subscription) -> list[inference_pb2.SubscribeResponse]:
    responses = []
    while len(subscription):
        responses.append(await asyncio.wait_for(subscription.next(), 5))
    return responses


def test_a_resent_frame_is_published_once_and_a_restarted_edges_frames_again() -> None:
    async def scenario():
        hub = SubscriberHub(capacity=16)
        publisher, state = ResultPublisher(hub), StreamState("cam", "model", "60")
        async with hub.subscribe(["cam"]) as subscription:
            published = [await publisher.publish(state, _result(0, 100)),
                         await publisher.publish(state, _result(1, 101)),
                         await publisher.publish(state, _result(1, 101)),  # resent after a reconnect
                         await publisher.publish(state, _result(0, 200))]  # a restarted edge: frame ids from 0
            return published, [(r.result.frame_id, r.result.capture.capture_time.seconds)
                               for r in await _drain(subscription)]

    published, seen = run(scenario())
    assert published == [True, True, False, True]
    assert seen == [(0, 100), (1, 101), (0, 200)]


def test_with_a_tracker_results_carry_track_ids_and_their_events_precede_them() -> None:
    pytest.importorskip("supervision", reason="tracking needs the tracks extra: pip install -e '.[tracks]'")
    from splitinfer.services.cloud.tracking import Tracker

    async def scenario():
        hub = SubscriberHub(capacity=64)
        publisher, state = ResultPublisher(hub, tracker=Tracker()), StreamState("cam", "model", "60")
        async with hub.subscribe(["cam"], events=True) as subscription:
            for frame_id in range(5):
                x = 100 + 10 * frame_id
                await publisher.publish(state, _result(frame_id, 100 + frame_id, (x, 100, x + 80, 300)))
            return await _drain(subscription)

    responses = run(scenario())
    kinds = ["event" if r.HasField("event") else "result" for r in responses]
    assert kinds[1] == "result" and kinds.count("result") == 5
    # The tracker's start is announced just before the first result (once a result is out, so are its events:
    # a replica that resumes after it loses none); a walking box keeps one track id.
    assert responses[0].event.kind == inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED
    assert responses[1].result.frame_id == 0
    track_ids = {d.track_id for r in responses if r.HasField("result") for d in r.result.detections}
    assert len(track_ids - {0}) == 1
