"""Prometheus metrics of the cloud service, served over HTTP from the event loop (no extra thread).

Each server owns its registry, so several servers in one process (tests, the demo) do not collide.
The HTTP endpoint, process_* and build info come from splitinfer.services.prometheus.
"""

from __future__ import annotations

import time
from typing import Any

from google.rpc import code_pb2
from prometheus_client import Counter, Gauge, Histogram

from splitinfer.results import event_kind
from splitinfer.services.prometheus import MetricsHttpServer, exposition, new_registry
from splitinfer.services.stages import EDGE_STAGES, STAGES
from splitinfer.v1 import inference_pb2

__all__ = ["CloudMetrics", "MetricsHttpServer"]

_STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BPE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0)
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
_PARTITION_LABELS = {p: inference_pb2.Partition.Name(p).removeprefix("PARTITION_").lower()
                     for p in (inference_pb2.PARTITION_FEATURES, inference_pb2.PARTITION_PIXELS,
                               inference_pb2.PARTITION_DETECTIONS)}


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
        self.payload_bytes = Counter("splitinfer_payload_bytes", "Bytes the frames carried (coded tensors with "
                                     "their quantizers and headers, video packets or edge detections).", ["model"], registry=r)
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

        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def count_track_event(self, event: inference_pb2.TrackEvent) -> None:
        """Count a track event (its labels come from the zones file, so the label sets stay bounded)."""
        if event.kind == inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED:
            self.tracker_restarts.inc()
            return
        self.zone_events.labels(event.stream_id, event.name, event_kind(event), event.direction).inc()

    def exposition(self) -> bytes:
        return exposition(self.registry)

    def record_result(self, result: inference_pb2.InferenceResult) -> None:
        """Count one answered frame: outcome, partition, end-to-end latency, payload, bits per element, stages."""
        model = result.model
        failed = result.HasField("error")
        outcome = _code_name(result.error.code) if failed else code_pb2.Code.Name(code_pb2.OK)
        self._child(self.frames, model, outcome).inc()
        self._child(self.partition_frames, _PARTITION_LABELS.get(result.origin.partition, "features")).inc()
        captured_ns, now_ns = result.capture.capture_time.ToNanoseconds(), time.time_ns()
        if 0 < captured_ns <= now_ns:  # a clock behind the edge's gives no figure
            self.end_to_end_seconds.observe((now_ns - captured_ns) / 1e9)
        self._child(self.payload_bytes, model).inc(result.payload_bytes)
        self._child(self.elements, model).inc(result.elements)
        if result.elements and not failed:
            self._child(self.bits_per_element, model).observe(8 * result.payload_bytes / result.elements)
        stage_seconds = result.stage_seconds
        for stage in STAGES:
            seconds = stage_seconds.get(stage)
            if seconds is not None:
                self._child(self.stage_seconds, stage).observe(seconds)

    def count_ignored_stages(self, frame: inference_pb2.FeatureFrame, result: inference_pb2.InferenceResult) -> None:
        """Count the frame's edge_stage_seconds entries that the engine did not copy into the result."""
        reported = len(frame.edge_stage_seconds)
        if reported:
            # The result's edge stages all came from this frame; counting them, not the frame's map, costs O(1).
            kept = sum(1 for name in EDGE_STAGES if name in result.stage_seconds)
            if reported > kept:
                self.ignored_stage_entries.inc(reported - kept)

    def _child(self, metric: Any, *values: str) -> Any:
        """metric.labels(*values), looked up once: every label value is server-defined, so there are few."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child


def _code_name(code: int) -> str:
    """The google.rpc.Code name of a FrameError code (the number itself if it names none)."""
    try:
        return code_pb2.Code.Name(code)
    except ValueError:
        return str(code)
