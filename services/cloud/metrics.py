"""Prometheus metrics of the cloud service, served over HTTP from the event loop (no extra thread).

Each server owns its registry, so several servers in one process (tests, the demo) do not collide.
The HTTP endpoint, process_* and build info come from splitinfer.services.prometheus.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from splitinfer.results import event_kind
from splitinfer.services.prometheus import MetricsHttpServer, exposition, new_registry
from splitinfer.v1 import inference_pb2

__all__ = ["CloudMetrics", "MetricsHttpServer"]

_STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BPE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0)
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)


class CloudMetrics:
    """Frames, bytes, bits per element, stage latencies, open streams, dropped results, refused input.

    Every label value is server-defined: model names, status code names, refusal reasons, partition names, the
    stage names of splitinfer.services.stages, and the streams, zones and lines of the zones file (bounded by
    services/cloud/zones.py's limits).
    """

    def __init__(self) -> None:
        self.registry = new_registry("cloud")
        r = self.registry
        self.frames = Counter("splitinfer_frames", "Frames answered, by outcome (OK or a gRPC status code name).",
                              ["model", "outcome"], registry=r)
        self.payload_bytes = Counter("splitinfer_payload_bytes", "Bytes the frames carried (coded tensors, video "
                                     "packets or edge detections).", ["model"], registry=r)
        self.partition_frames = Counter("splitinfer_partition_frames", "Frames answered, by the stream's partition "
                                        "(features, pixels, detections).", ["partition"], registry=r)
        self.elements = Counter("splitinfer_elements", "Tensor elements received.", ["model"], registry=r)
        self.bits_per_element = Histogram("splitinfer_bits_per_element", "Coded bits per tensor element, per frame.",
                                          ["model"], buckets=_BPE_BUCKETS, registry=r)
        self.stage_seconds = Histogram("splitinfer_stage_seconds", "Seconds per pipeline stage and frame.",
                                       ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.open_streams = Gauge("splitinfer_open_streams", "Infer streams open now.", registry=r)
        self.subscribers = Gauge("splitinfer_subscribers", "Subscribe streams open now.", registry=r)
        self.dropped_results = Counter("splitinfer_dropped_results",
                                       "Results dropped because a subscriber read too slowly.", registry=r)
        self.rejected_streams = Counter("splitinfer_rejected_streams", "Infer streams refused, by reason.",
                                        ["reason"], registry=r)
        self.ignored_stage_entries = Counter(
            "splitinfer_ignored_stage_entries", "edge_stage_seconds entries dropped: an unknown stage name or a value "
            "that is not a time (they never become label values nor reach results).", registry=r)
        self.idle_streams = Counter("splitinfer_idle_streams", "Infer streams ended after --stream-idle-timeout "
                                    "seconds without a frame.", registry=r)
        self.oversized_results = Counter("splitinfer_oversized_results", "Results replaced by an in-band error because "
                                         "they would exceed --max-message-bytes.", registry=r)
        self.end_to_end_seconds = Histogram(
            "splitinfer_end_to_end_seconds", "Seconds from a frame's capture on the edge to its result here (edge and "
            "cloud wall clocks: synchronise them, e.g. NTP).", buckets=_LATENCY_BUCKETS, registry=r)
        self.zone_events = Counter(
            "splitinfer_zone_events", "Track events per stream and zone or line of the zones file: zone_entered, "
            "zone_left, line_crossed (direction forward or backward; empty for zones).",
            ["stream", "name", "kind", "direction"], registry=r)
        self.tracker_restarts = Counter("splitinfer_tracker_restarts", "Streams whose tracker started afresh (a new "
                                        "stream here, a restarted edge, a stream moved from another replica).",
                                        registry=r)
        self.untracked_results = Counter("splitinfer_untracked_results", "Results not tracked because their frame "
                                         "was not after the stream's last tracked one (resent, late).", registry=r)

    def count_track_event(self, event: inference_pb2.TrackEvent) -> None:
        """Count a track event (its labels come from the zones file, so the label sets stay bounded)."""
        if event.kind == inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED:
            self.tracker_restarts.inc()
            return
        self.zone_events.labels(event.stream_id, event.name, event_kind(event), event.direction).inc()

    def exposition(self) -> bytes:
        return exposition(self.registry)
