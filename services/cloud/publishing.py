"""Publishing answered frames: once per frame, tracked, to the subscribers and the results bus.

The servicer answers each frame to its edge; what other services see goes through here. A frame resent in file
mode is answered again but published once (the stream's state remembers what it published). With --tracking the
result gets its track ids first and its track events follow it (docs/TRACKS.md), so a subscriber sees a result
and the events it caused in order, from the in-memory hub or the results bus alike.
"""

from __future__ import annotations

from collections.abc import Callable

from splitinfer.services.cloud.bus import ResultBus
from splitinfer.services.cloud.streams import StreamState
from splitinfer.services.cloud.subscribers import SubscriberHub
from splitinfer.services.cloud.tracking import Tracker
from splitinfer.v1 import inference_pb2


class ResultPublisher:
    """Publishes a stream's results and track events to the hub or the bus, each frame once."""

    def __init__(self, hub: SubscriberHub | ResultBus,
                 bound_result: Callable[[inference_pb2.InferenceResult], None] = lambda result: None,
                 tracker: Tracker | None = None) -> None:
        self.hub = hub
        self.tracker = tracker  # set from --tracking and --zones; None: no track ids, no events
        self._bound_result = bound_result  # the servicer's size bound, applied again once track ids are set

    async def publish(self, state: StreamState, result: inference_pb2.InferenceResult) -> bool:
        """Track and publish `result` unless the stream published its frame already; True if it did now."""
        if not state.first_publication(result.frame_id, result.capture.capture_time.ToNanoseconds()):
            return False
        events: list[inference_pb2.TrackEvent] = []
        if self.tracker is not None:
            events = self.tracker.observe(result)
            self._bound_result(result)  # the track ids add a few bytes per detection
        await self.hub.publish(result)
        for event in events:
            await self.hub.publish_event(event)
        return True
