"""Prometheus metrics of the edge: frames, drops, bytes, stage seconds, reconnects, current rate.

A sink (call it with each FrameOutcome) that also copies the streamer's and grabber's counters when
`refresh` runs, so drops and reconnects show between results too. Served by
splitinfer.services.prometheus.MetricsHttpServer on the edge's event loop.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from splitinfer.services.edge.client import FrameOutcome
from splitinfer.services.edge.live import LiveStats
from splitinfer.services.prometheus import exposition, new_registry

# Stages the edge and the cloud report; any other name a cloud sends is not turned into a label.
STAGES = ("capture", "preprocess", "head", "encode", "queue", "decode", "tail", "postprocess")
_STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_LATENCY_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)


def _code_name(code: int) -> str:
    import grpc

    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))


class EdgeMetrics:
    """The edge's registry and the sink that fills it."""

    def __init__(self, live: LiveStats) -> None:
        self.registry = new_registry("edge")
        r = self.registry
        self.live = live  # fed by its own sink; read here for the current rates
        self.frames = Counter("splitinfer_edge_frames", "Frames answered by the cloud, by outcome (OK or the error "
                              "code name).", ["outcome"], registry=r)
        self.dropped = Counter("splitinfer_edge_dropped_frames", "Frames not sent: live_grabber (a newer frame "
                               "replaced it), lost_on_reconnect (unanswered when a live stream reconnected) or "
                               "rate_control (over the budget even at the cheapest point).", ["reason"], registry=r)
        self.rate_budget = Gauge("splitinfer_edge_rate_budget_bits_per_second", "With --rate-kbps: the budget now "
                                 "(lowered by backpressure when the link carries less).", registry=r)
        self.rate_point = Gauge("splitinfer_edge_rate_point", "With --rate-kbps: the ladder point of the last frame "
                                "(0: cheapest).", registry=r)
        self.payload_bytes = Counter("splitinfer_edge_payload_bytes", "Coded feature bytes sent (answered frames).",
                                     registry=r)
        self.stage_seconds = Histogram("splitinfer_edge_stage_seconds", "Seconds per stage and frame, edge and cloud.",
                                       ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.latency = Histogram("splitinfer_edge_latency_seconds", "Capture to result, on the edge's clock.",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.reconnects = Counter("splitinfer_edge_reconnects", "Reconnections to the cloud.", registry=r)
        self.partition_switches = Counter("splitinfer_edge_partition_switches", "--partition auto: switches to "
                                          "another partition (a new call each).", registry=r)
        self.source_failures = Counter("splitinfer_edge_source_failures", "Video source opens that failed and reads "
                                       "that stopped.", registry=r)
        self.frame_rate = Gauge("splitinfer_edge_frame_rate", "Frames answered per second (last 5 s).", registry=r)
        self.bit_rate = Gauge("splitinfer_edge_bit_rate", "Coded feature bits per second (last 5 s).", registry=r)
        self._copied: dict[str, int] = {}
        self._streamer: Any = None

    def watch(self, streamer: Any) -> None:
        """Copy this streamer's and its grabber's counters at each refresh."""
        self._streamer = streamer

    def __call__(self, outcome: FrameOutcome) -> None:
        result = outcome.result
        outcome_name = "OK" if not result.HasField("error") else _code_name(result.error.code)
        self.frames.labels(outcome_name).inc()
        self.payload_bytes.inc(result.payload_bytes)
        for stage, seconds in result.stage_seconds.items():
            if stage in STAGES and seconds >= 0:
                self.stage_seconds.labels(stage).observe(seconds)
        self.latency.observe(max(0.0, outcome.latency_seconds))
        self.refresh()

    def _copy(self, name: str, total: int, counter: Any) -> None:
        delta = total - self._copied.get(name, 0)
        if delta > 0:
            counter.inc(delta)
            self._copied[name] = total

    def refresh(self) -> None:
        """Bring the copied counters and the current rates up to date."""
        snapshot = self.live.snapshot()
        self.frame_rate.set(snapshot["fps"])
        self.bit_rate.set(1000 * snapshot["kbit_s"])
        if self._streamer is None:
            return
        stats, grabber = self._streamer.stats, self._streamer.grabber.stats
        self._copy("reconnects", stats.reconnects, self.reconnects)
        self._copy("switches", stats.partition_switches, self.partition_switches)
        self._copy("lost", stats.lost_on_reconnect, self.dropped.labels("lost_on_reconnect"))
        self._copy("dropped", grabber.dropped, self.dropped.labels("live_grabber"))
        self._copy("failures", grabber.failures, self.source_failures)
        self._copy("rate", stats.dropped_by_rate, self.dropped.labels("rate_control"))
        rate = getattr(self._streamer.pipeline, "rate", None)
        if rate is not None:
            self.rate_budget.set(rate.budget_bps)
            self.rate_point.set(rate.point)

    def exposition(self) -> bytes:
        self.refresh()
        return exposition(self.registry)
