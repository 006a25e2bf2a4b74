"""Publishing answered frames: once per frame, tracked, to the subscribers and the results bus.

The servicer answers each frame to its edge; what other services see goes through here. A frame resent in file
mode is answered again but published once (the stream's state remembers what it published). With --tracking the
result gets its track ids first and its track events go out just before it (docs/TRACKS.md), so a subscriber sees
the events a frame caused, then its result, from the in-memory hub or the results bus alike; a stream new to this
process resumes its tracks from its last result on the bus (a failover).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from splitinfer.services.cloud.bus import ResultBus
from splitinfer.services.cloud.streams import StreamState
from splitinfer.services.cloud.subscribers import SubscriberHub
from splitinfer.services.cloud.tracking import Tracker
from splitinfer.v1 import inference_pb2

log = logging.getLogger("splitinfer.cloud")


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
            if isinstance(self.hub, ResultBus) and not self.tracker.knows(result.stream_id):
                # A stream new to this process may have moved here from a replica that died: go on from its tracks.
                if self.tracker.resume(await self.hub.last_result(result.stream_id), result):
                    log.info("stream %s: tracks resumed from its last result on the bus", result.stream_id)
            events = self.tracker.observe(result)
            self._bound_result(result)  # the track ids add a few bytes per detection
        # Events first: once a result is on the bus, so are its events, and a replica that resumes after it
        # (Tracker.resume) loses none; a replica that dies between the two leaves events whose frame the edge
        # resends, and the next replica publishes them again (same ids where its track ids are the same).
        for event in events:
            await self.hub.publish_event(event)
        await self.hub.publish(result)
        return True
