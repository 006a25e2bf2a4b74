"""Where the edge's results go: JSON lines on stdout, an annotated video file, a local window.

A JSON line per frame is the result's JSON form (splitinfer.results: protobuf's JSON mapping, described in
docs/RESULTS_SCHEMA.md and docs/inference_result.schema.json) plus the edge's annotation `latency_s`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from splitinfer.errors import ServiceError
from splitinfer.results import result_to_dict, result_to_json
from splitinfer.services.edge.client import FrameOutcome


def outcome_to_dict(outcome: FrameOutcome) -> dict:
    """The JSON-lines record of one frame (what `splitinfer edge` prints)."""
    record = result_to_dict(outcome.result)
    record["latency_s"] = round(outcome.latency_seconds, 6)
    return record


def outcome_to_json(outcome: FrameOutcome) -> str:
    """The JSON line of one frame, without the newline."""
    return result_to_json(outcome.result, latency_s=round(outcome.latency_seconds, 6))


class JsonLinesSink:
    """Writes one JSON object per frame and flushes, so a pipe reader sees results as they come."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, outcome: FrameOutcome) -> None:
        self.stream.write(outcome_to_json(outcome) + "\n")
        self.stream.flush()


def draw_detections(image: np.ndarray, outcome: FrameOutcome) -> np.ndarray:
    """A copy of the frame with boxes, labels and scores drawn (BGR)."""
    import cv2

    canvas = image.copy()
    for det in outcome.result.detections:
        colour = _colour(det.class_id)
        p1, p2 = (int(round(det.x1)), int(round(det.y1))), (int(round(det.x2)), int(round(det.y2)))
        cv2.rectangle(canvas, p1, p2, colour, 2)
        text = f"{det.label} {det.score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        cv2.rectangle(canvas, (p1[0], max(0, p1[1] - th - 4)), (p1[0] + tw + 2, max(th + 4, p1[1])), colour, -1)
        cv2.putText(canvas, text, (p1[0] + 1, max(th + 1, p1[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    if outcome.result.HasField("error"):
        cv2.putText(canvas, f"error: {outcome.result.error.message[:80]}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, (0, 0, 255), 1)
    return canvas


def _colour(class_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(class_id * 7919 + 17)
    return tuple(int(c) for c in rng.integers(64, 256, size=3))


class AnnotatedVideoSink:
    """Writes annotated frames to a video file (mp4v for .mp4, MJPG for .avi)."""

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 10.0
        self._writer = None

    def __call__(self, outcome: FrameOutcome) -> None:
        import cv2

        image = draw_detections(outcome.frame.image, outcome)
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            height, width = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                self._writer = None
                raise ServiceError(f"could not open {self.path} for writing an annotated video: check the folder "
                                   "exists and the suffix is .mp4 or .avi.")
        self._writer.write(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class WindowSink:
    """Shows annotated frames in a local window; fails at first use when OpenCV has no GUI support."""

    def __init__(self, title: str) -> None:
        self.title = title

    @staticmethod
    def display_available() -> bool:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return False
        import cv2

        try:
            return bool(cv2.getBuildInformation().count("GTK") or cv2.getBuildInformation().count("QT"))
        except cv2.error:
            return False

    def __call__(self, outcome: FrameOutcome) -> None:
        import cv2

        try:
            cv2.imshow(self.title, draw_detections(outcome.frame.image, outcome))
            cv2.waitKey(1)
        except cv2.error as exc:
            raise ServiceError("this OpenCV build cannot open windows (opencv-python-headless): run with --no-window "
                               "or pip install opencv-python.") from exc

    def close(self) -> None:
        import cv2

        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass
