"""Where the edge's results go: JSON lines on stdout, an annotated video file, a local window.

A JSON line per frame is the result's JSON form (splitinfer.results: protobuf's JSON mapping, described in
docs/RESULTS_SCHEMA.md and docs/inference_result.schema.json) plus the edge's annotation `latency_s`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import webbrowser
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from splitinfer.errors import ConfigError, ServiceError
from splitinfer.results import result_to_dict, result_to_json
from splitinfer.services.edge.client import FrameOutcome
from splitinfer.logs import NativeStderr
from splitinfer.v1 import inference_pb2

log = logging.getLogger("splitinfer.edge")


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


_FONT_SCALE, _THICKNESS, _PAD = 0.5, 1, 2
# Boxes that overlap this much are one object the detector labelled twice (NMS runs per class): one label.
SAME_BOX_IOU = 0.8


def _iou(a, b) -> float:
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_layout(detections: Any, width: int, height: int) -> list[tuple[Any, str, tuple[int, int, int, int]]]:
    """Where each label goes: (detection, text, (x1, y1, x2, y2)), best score first, no two labels overlapping.

    A box that is the same object as a better-scored one (IoU >= SAME_BOX_IOU) gets no label of its own; the
    best one names the runner-up classes after it ("knife 0.61 | scissors 0.29"); a tracked object's label carries
    its track id ("person #7 0.90", docs/TRACKS.md). A label sits above its box,
    else inside its top edge, else below it, else moves down until it is clear of the labels placed before.
    """
    import cv2

    ordered = sorted(detections, key=lambda d: -d.score)
    groups: list[list] = []
    for det in ordered:
        for group in groups:
            if _iou(group[0], det) >= SAME_BOX_IOU:
                group.append(det)
                break
        else:
            groups.append([det])
    placed: list[tuple[Any, str, tuple[int, int, int, int]]] = []
    for group in groups:
        best = group[0]
        text = " | ".join(f"{d.label}{f' #{d.track_id}' if d.track_id else ''} {d.score:.2f}" for d in group[:3])
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, _THICKNESS)
        w, h = tw + 2 * _PAD, th + baseline + 2 * _PAD
        x = int(min(max(0, round(best.x1)), max(0, width - w)))
        top, bottom = int(round(best.y1)), int(round(best.y2))
        candidates = [top - h, top, bottom]
        candidates += [bottom + k * h for k in range(1, 40)] + [top - k * h for k in range(2, 40)]
        rect = None
        for y in candidates:
            y = int(min(max(0, y), max(0, height - h)))
            trial = (x, y, x + w, y + h)
            if not any(_overlaps(trial, other) for _, _, other in placed):
                rect = trial
                break
        if rect is None:
            continue  # no free place on the frame: better no label than one that hides another
        placed.append((best, text, rect))
    return placed


def draw_detections(image: np.ndarray, outcome: FrameOutcome) -> np.ndarray:
    """A copy of the frame with boxes, and labels (best score first) that never cover one another (BGR)."""
    import cv2

    canvas = image.copy()
    height, width = canvas.shape[:2]
    draw_zones(canvas, outcome.zones, outcome.result.zone_counts)
    detections = list(outcome.result.detections)
    for det in sorted(detections, key=lambda d: d.score):  # the best box is drawn last, on top
        p1, p2 = (int(round(det.x1)), int(round(det.y1))), (int(round(det.x2)), int(round(det.y2)))
        cv2.rectangle(canvas, p1, p2, _colour(det.class_id), 2)
    for det, text, (x1, y1, x2, y2) in label_layout(detections, width, height):
        cv2.rectangle(canvas, (x1, y1), (x2, y2), _colour(det.class_id), -1)
        cv2.putText(canvas, text, (x1 + _PAD, y2 - _PAD - 3), cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, (0, 0, 0),
                    _THICKNESS, cv2.LINE_AA)
    if outcome.result.HasField("error"):
        cv2.putText(canvas, f"error: {outcome.result.error.message[:80]}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, (0, 0, 255), 1)
    return canvas


# Zones and lines in one colour no class gets (_colour draws from 64..255 per channel at random): magenta, BGR.
ZONE_COLOUR = (255, 0, 255)


def zone_caption(shape: inference_pb2.ZoneShape, counts: dict[str, inference_pb2.ZoneCount]) -> str:
    """`door: 2 inside` or `entrance: 3 fwd, 1 back` (the name alone before the first tracked result)."""
    count = counts.get(shape.name)
    if count is None:
        return shape.name
    if shape.kind == inference_pb2.ZONE_SHAPE_KIND_LINE:
        return f"{shape.name}: {count.forward} fwd, {count.backward} back"
    return f"{shape.name}: {count.inside} inside"


def draw_zones(canvas: np.ndarray, shapes: Iterable[inference_pb2.ZoneShape],
               zone_counts: Iterable[inference_pb2.ZoneCount]) -> None:
    """Draw the cloud's zones (outlines) and lines (with an arrow to their forward side), each with its counts."""
    import cv2

    counts = {count.name: count for count in zone_counts}
    for shape in shapes:
        points = np.round(np.array(shape.coordinates, dtype=np.float64).reshape(-1, 2)).astype(np.int32)
        if len(points) < 2:
            continue
        if shape.kind == inference_pb2.ZONE_SHAPE_KIND_LINE:
            cv2.line(canvas, tuple(points[0]), tuple(points[1]), ZONE_COLOUR, 3, cv2.LINE_AA)
            middle, along = (points[0] + points[1]) / 2, (points[1] - points[0]).astype(np.float64)
            right = np.array([-along[1], along[0]]) / max(float(np.hypot(*along)), 1e-9)  # forward: right of a->b
            tip = np.round(middle + 20 * right).astype(np.int32)
            cv2.arrowedLine(canvas, tuple(np.round(middle).astype(np.int32)), tuple(tip), ZONE_COLOUR, 2,
                            cv2.LINE_AA, tipLength=0.4)
        else:
            cv2.polylines(canvas, [points.reshape(-1, 1, 2)], True, ZONE_COLOUR, 2, cv2.LINE_AA)
        text = zone_caption(shape, counts)
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, _THICKNESS)
        x = int(np.clip(points[0][0], 0, max(canvas.shape[1] - tw - 2 * _PAD, 0)))
        y = int(np.clip(points[0][1] - 4, th + baseline + 2 * _PAD, canvas.shape[0]))
        cv2.rectangle(canvas, (x, y - th - baseline - 2 * _PAD), (x + tw + 2 * _PAD, y), ZONE_COLOUR, -1)
        cv2.putText(canvas, text, (x + _PAD, y - baseline - _PAD), cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE,
                    (0, 0, 0), _THICKNESS, cv2.LINE_AA)


def _colour(class_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(class_id * 7919 + 17)
    blue, green, red = (int(c) for c in rng.integers(64, 256, size=3))
    return blue, green, red


# H.264 first (small files every player opens) where this OpenCV build can write it; else MPEG-4 Part 2.
_MP4_CODECS = ("avc1", "mp4v")


class AnnotatedVideoSink:
    """Writes annotated frames to a video file at the source's frame rate (H.264 or mp4v for .mp4, MJPG for .avi).

    `fps` is a number or a function returning the source's rate once it is known (None: 10 fps, said in the log).
    """

    def __init__(self, path: str | os.PathLike, fps: float | Callable[[], float | None] | None) -> None:
        self.path = Path(path)
        self._fps = fps
        self.fps: float | None = None
        self.codec: str | None = None
        self._writer: Any = None

    def _resolve_fps(self) -> float:
        fps = self._fps() if callable(self._fps) else self._fps
        if fps and fps > 0:
            return float(fps)
        log.warning("the source does not say its frame rate: writing %s at 10 fps", self.path)
        return 10.0

    def _open(self, width: int, height: int) -> None:
        import cv2

        self.fps = self._resolve_fps()
        codecs = ("MJPG",) if self.path.suffix.lower() == ".avi" else _MP4_CODECS
        for codec in codecs:
            with NativeStderr.quiet():  # a missing encoder is expected: the next codec is tried
                writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*codec), self.fps, (width, height))
            if writer.isOpened():
                self._writer, self.codec = writer, codec
                if codec != codecs[0]:
                    log.info("this OpenCV build has no %s encoder: writing %s as %s", codecs[0], self.path, codec)
                return
            writer.release()
        raise ServiceError(f"could not open {self.path} for writing an annotated video: check the folder exists and "
                           "the suffix is .mp4 or .avi.")

    def __call__(self, outcome: FrameOutcome) -> None:
        image = draw_detections(outcome.frame.image, outcome)
        if self._writer is None:
            height, width = image.shape[:2]
            self._open(width, height)
        self._writer.write(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def opencv_has_gui() -> bool:
    """Whether this OpenCV build can open windows (opencv-python has GTK or Qt; the headless wheel has none)."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("NONE", "NO", "")
    return False


def display_plan(environ: Mapping[str, str] | None = None) -> str:
    """How --display shows frames: "window" (GUI OpenCV) or "browser" (the live page); ConfigError saying why neither.

    The edge installs the headless OpenCV wheel (the cloud image needs no GUI libraries, and the GUI and
    headless wheels both install `cv2`, so they cannot sit side by side): on a desktop, --display opens the
    live page in the default browser, or a native window when a GUI OpenCV is installed instead.
    """
    environ = os.environ if environ is None else environ
    if sys.platform.startswith("linux") and not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
        raise ConfigError("--display: there is no display here (neither DISPLAY nor WAYLAND_DISPLAY is set: a "
                          "server, a container, or ssh without -X). Use --preview-port PORT instead and open "
                          "http://127.0.0.1:PORT/ through an ssh tunnel (ssh -L PORT:127.0.0.1:PORT host), or "
                          "--preview-host 0.0.0.0 on a trusted network.")
    if sys.platform.startswith("linux"):
        _check_display_answers(environ)
    if opencv_has_gui():
        return "window"
    try:
        webbrowser.get()
    except webbrowser.Error:
        raise ConfigError("--display: this OpenCV is the headless build (no GUI) and no web browser was found to show "
                          "the live page (set $BROWSER, or install one with xdg-open); or use --preview-port PORT and "
                          "open the page yourself.") from None
    return "browser"


def _check_display_answers(environ: Mapping[str, str]) -> None:
    """ConfigError unless the X server of $DISPLAY or the compositor of $WAYLAND_DISPLAY accepts a connection: a
    variable left over from another session would otherwise start a browser that dies at once."""
    tried = []
    wayland = environ.get("WAYLAND_DISPLAY")
    if wayland:
        path = Path(wayland) if wayland.startswith("/") else Path(environ.get("XDG_RUNTIME_DIR", "/nonexistent")) / wayland
        tried.append(f"WAYLAND_DISPLAY={wayland} ({path})")
        if _unix_socket_answers(str(path)):
            return
    display = environ.get("DISPLAY")
    if display:
        tried.append(f"DISPLAY={display}")
        if _x_display_answers(display):
            return
    raise ConfigError(f"--display: no display server answers at {' or '.join(tried)} (a variable left over from "
                      "another session, or the X server or compositor has stopped). Start it or fix the variable, "
                      "or use --preview-port PORT and open http://127.0.0.1:PORT/ in a browser.")


def _x_display_answers(display: str) -> bool:
    """Whether an X server listens at `display` ("[host]:N[.screen]"): its unix socket for a local display (also
    Linux's abstract one), TCP port 6000+N for a remote one (ssh -X forwards e.g. localhost:10)."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".", 1)[0]
    if not number.isdigit():
        return False
    if host in ("", "unix"):
        local = f"/tmp/.X11-unix/X{number}"
        return _unix_socket_answers(local) or _unix_socket_answers("\0" + local)  # the file, or Linux's abstract socket
    try:
        socket.create_connection((host, 6000 + int(number)), timeout=2.0).close()
    except OSError:
        return False
    return True


def _unix_socket_answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


class WindowSink:
    """Shows annotated frames in a local window (needs a GUI OpenCV build; see display_plan)."""

    def __init__(self, title: str) -> None:
        self.title = title

    def __call__(self, outcome: FrameOutcome) -> None:
        import cv2

        try:
            cv2.imshow(self.title, draw_detections(outcome.frame.image, outcome))
            cv2.waitKey(1)
        except cv2.error as exc:
            raise ServiceError(f"OpenCV could not open a window ({exc.err}): run without --display and use "
                               "--preview-port PORT to see the live page in a browser.") from exc

    def close(self) -> None:
        import cv2

        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass
