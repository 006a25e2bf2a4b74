"""Live figures of an edge stream (fps, kbit/s, bits/element, latency, detections per class, the cloud's zone and
line counts) over a sliding window.

A sink: call it with each FrameOutcome. `snapshot()` gives the current figures, `history` one point per
second for the charts of the live page; everything kept is bounded (window and history length).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from splitinfer.services.edge.client import FrameOutcome
from splitinfer.v1 import inference_pb2


@dataclass
class _Sample:
    at: float
    payload_bytes: int
    elements: int
    latency_s: float
    error: bool


def _zone_count(count: inference_pb2.ZoneCount) -> dict:
    if count.kind == inference_pb2.ZONE_SHAPE_KIND_LINE:
        return {"name": count.name, "kind": "line", "forward": count.forward, "backward": count.backward}
    return {"name": count.name, "kind": "zone", "inside": count.inside}


@dataclass
class LiveStats:
    """Figures over the last `window_s` seconds, and a per-second history of `history_len` points."""

    window_s: float = 5.0
    history_len: int = 120
    frames: int = 0
    errors: int = 0
    payload_bytes: int = 0
    elements: int = 0
    detections_by_class: collections.Counter = field(default_factory=collections.Counter)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._recent: collections.deque[_Sample] = collections.deque()
        self.history: collections.deque[dict] = collections.deque(maxlen=self.history_len)
        self._last_point = 0.0
        self._current_classes: collections.Counter = collections.Counter()
        self._zones: list[dict] = []  # the cloud's zone and line counts after the newest tracked result

    def __call__(self, outcome: FrameOutcome) -> None:
        result = outcome.result
        now = time.monotonic()
        error = result.HasField("error")
        self.frames += 1
        self.errors += error
        self.payload_bytes += result.payload_bytes
        self.elements += result.elements
        self._current_classes = collections.Counter(d.label or str(d.class_id) for d in result.detections)
        self.detections_by_class.update(self._current_classes)
        if result.zone_counts:
            self._zones = [_zone_count(count) for count in result.zone_counts]
        self._recent.append(_Sample(now, result.payload_bytes, result.elements, outcome.latency_seconds, error))
        self._trim(now)
        if now - self._last_point >= 1.0:
            self._last_point = now
            self.history.append(self.snapshot(now))

    def _trim(self, now: float) -> None:
        while self._recent and now - self._recent[0].at > self.window_s:
            self._recent.popleft()

    def snapshot(self, now: float | None = None) -> dict:
        """Current figures: fps, kbit/s, bits/element and mean latency over the window, plus totals."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        recent = list(self._recent)
        span = min(self.window_s, max(now - self.started, 1e-3))
        payload = sum(s.payload_bytes for s in recent)
        elements = sum(s.elements for s in recent)
        return {
            "t": round(now - self.started, 3),
            "fps": round(len(recent) / span, 3),
            "kbit_s": round(8 * payload / 1000 / span, 3),
            "bits_per_element": round(8 * payload / elements, 4) if elements else 0.0,
            "latency_ms": round(1000 * sum(s.latency_s for s in recent) / len(recent), 2) if recent else 0.0,
            "frames": self.frames,
            "errors": self.errors,
            "detections": dict(self._current_classes),
            "zones": list(self._zones),
        }

    def report(self) -> dict:
        """What the live page polls: the snapshot, the history and detections per class so far."""
        return {"now": self.snapshot(), "history": list(self.history),
                "detections_total": dict(self.detections_by_class.most_common(20))}
