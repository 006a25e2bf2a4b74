"""Track events in the in-memory hub: only to subscribers that asked, with the authorization of results."""

from __future__ import annotations

import asyncio

from splitinfer.services.cloud.subscribers import SubscriberHub
from splitinfer.v1 import inference_pb2
from tests.services.conftest import run


def _result(stream_id: str, frame_id: int) -> inference_pb2.InferenceResult:
    return inference_pb2.InferenceResult(stream_id=stream_id, frame_id=frame_id)


def _event(stream_id: str, frame_id: int) -> inference_pb2.TrackEvent:
    return inference_pb2.TrackEvent(id=f"{stream_id}-{frame_id}", stream_id=stream_id, frame_id=frame_id,
                                    kind=inference_pb2.TRACK_EVENT_KIND_LINE_CROSSED, name="door", track_id=1)


async def _drain(subscription) -> list:
    items = []
    while len(subscription):
        response = await asyncio.wait_for(subscription.next(), 5)
        message = response.event if response.HasField("event") else response.result
        items.append((type(message).__name__, message.stream_id, message.frame_id, response.sequence))
    return items


def test_events_reach_only_subscribers_that_asked_and_may_read_the_stream_and_resume_in_order() -> None:
    async def scenario():
        hub = SubscriberHub(capacity=16)
        async with hub.subscribe([], events=True, permits=lambda s: s == "cam-a") as allowed, \
                hub.subscribe([], events=False) as results_only:
            await hub.publish(_result("cam-a", 0))
            await hub.publish_event(_event("cam-a", 0))
            await hub.publish(_result("cam-b", 0))
            await hub.publish_event(_event("cam-b", 0))
            first = hub.last_sequence - 3
            got_allowed, got_results = await _drain(allowed), await _drain(results_only)
        async with hub.subscribe(["cam-a"], first, events=True) as resumed:  # after the first result
            got_resumed = await _drain(resumed)
        return first, got_allowed, got_results, got_resumed

    first, allowed, results_only, resumed = run(scenario())
    assert allowed == [("InferenceResult", "cam-a", 0, first), ("TrackEvent", "cam-a", 0, first + 1)]
    assert results_only == [("InferenceResult", "cam-a", 0, first), ("InferenceResult", "cam-b", 0, first + 2)]
    assert resumed == [("TrackEvent", "cam-a", 0, first + 1)]
