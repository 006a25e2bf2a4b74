"""Video capture with OpenCV: one grabber thread per source, frames stamped at grab time.

Live sources (camera index, RTSP, HTTP) keep only the newest frame: a slow consumer sees fresh frames
and the frames it never took are counted as dropped. Files deliver every frame through a bounded queue
(the reader waits when the consumer is slow). A lost live source is reopened with exponential backoff;
a file that ends, or a live source in `file` mode that ends, finishes the stream.
"""

from __future__ import annotations

import enum
import logging
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitinfer.services.errors import CaptureError

log = logging.getLogger("splitinfer.edge.capture")


class SourceKind(enum.Enum):
    CAMERA = "camera"
    FILE = "file"
    NETWORK = "network"


class CaptureMode(enum.Enum):
    """live: newest frame wins (drops counted); file: every frame, in order."""

    LIVE = "live"
    FILE = "file"


def source_kind(source: str) -> SourceKind:
    """Classify a --source value: a digit string is a camera index, a URL a network stream, else a file."""
    text = source.strip()
    if not text:
        raise CaptureError("the video source is empty: pass a camera index (0), a file path or an rtsp:// or http:// URL.")
    if text.isdigit():
        return SourceKind.CAMERA
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp"):
            raise CaptureError(f"unsupported source scheme {scheme!r} in {source!r}: use rtsp://, http:// or https://.")
        return SourceKind.NETWORK
    return SourceKind.FILE


def default_mode(kind: SourceKind) -> CaptureMode:
    return CaptureMode.FILE if kind is SourceKind.FILE else CaptureMode.LIVE


@dataclass(frozen=True)
class CapturedFrame:
    """A BGR frame and when it was grabbed (sequence number, wall clock and monotonic clock, ns)."""

    sequence: int
    image: np.ndarray
    wall_time_ns: int
    monotonic_ns: int
    read_seconds: float = 0.0  # time OpenCV took to read and decode it


@dataclass
class CaptureStats:
    grabbed: int = 0
    delivered: int = 0
    dropped: int = 0
    reopened: int = 0


class _End:
    """Marks the end of a source; `reason` says why, `error` whether it was a failure."""

    def __init__(self, reason: str, error: bool) -> None:
        self.reason = reason
        self.error = error


class FrameGrabber:
    """Reads one source on its own thread; `get()` hands frames to the consumer.

    Use as a context manager (or call start/stop). `get` returns a CapturedFrame, None on timeout,
    and raises StopIteration-like `EndOfSource` once the source has ended.
    """

    def __init__(
        self,
        source: str,
        *,
        mode: CaptureMode | None = None,
        max_frames: int | None = None,
        queue_size: int = 2,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        reopen_initial_s: float = 0.5,
        reopen_max_s: float = 10.0,
        pace: bool | None = None,
    ) -> None:
        self.source = source
        self.kind = source_kind(source)
        self.mode = mode or default_mode(self.kind)
        if self.kind is SourceKind.FILE and not Path(source).is_file():
            raise CaptureError(f"video file {source!r} does not exist: check the path passed to --source.")
        if max_frames is not None and max_frames < 1:
            raise CaptureError(f"max_frames must be at least 1, got {max_frames}.")
        if queue_size < 1:
            raise CaptureError(f"the capture queue needs room for at least one frame, got {queue_size}.")
        self.max_frames = max_frames
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.reopen_initial_s = reopen_initial_s
        self.reopen_max_s = reopen_max_s
        # A file read in live mode stands in for a camera: read it at its own frame rate.
        self.pace = (self.kind is SourceKind.FILE and self.mode is CaptureMode.LIVE) if pace is None else pace
        self.stats = CaptureStats()
        self.fps: float | None = None
        self._queue: queue.Queue[CapturedFrame | _End] = queue.Queue(maxsize=queue_size)
        self._latest: CapturedFrame | _End | None = None
        self._latest_lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._end: _End | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> FrameGrabber:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the grabber is already started")
        self._thread = threading.Thread(target=self._run, name=f"grabber:{self.source}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._latest_lock:
            self._latest_lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- consumer side -------------------------------------------------------------------------
    def get(self, timeout: float = 0.5) -> CapturedFrame | None:
        """The next frame (file mode) or the newest one (live mode); None if none came within timeout.

        Raises EndOfSource when the source has ended (file finished, max_frames reached, or a failure).
        """
        if self._end is not None:
            raise EndOfSource(self._end.reason, self._end.error)
        if self.mode is CaptureMode.FILE:
            try:
                item: CapturedFrame | _End | None = self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
        else:
            with self._latest_lock:
                if self._latest is None:
                    self._latest_lock.wait(timeout)
                item, self._latest = self._latest, None
                if item is None:
                    return None
        if isinstance(item, _End):
            self._end = item
            raise EndOfSource(item.reason, item.error)
        self.stats.delivered += 1
        return item

    def frames(self, timeout: float = 10.0) -> Iterator[CapturedFrame]:
        """Every frame `get` hands out, until the source ends (reading a whole file: tests, benchmarks)."""
        while True:
            try:
                frame = self.get(timeout)
            except EndOfSource:
                return
            if frame is not None:
                yield frame

    # -- grabber thread ------------------------------------------------------------------------
    def _open(self) -> Any:
        import cv2

        if self.kind is SourceKind.CAMERA:
            capture = cv2.VideoCapture(int(self.source))
        elif self.kind is SourceKind.NETWORK:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
            capture = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, params)
        else:
            capture = cv2.VideoCapture(self.source)
        if not capture.isOpened():
            capture.release()
            return None
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        return capture

    def _deliver(self, item: CapturedFrame | _End) -> bool:
        """Hand an item to the consumer; False if the grabber was stopped meanwhile."""
        if self.mode is CaptureMode.FILE:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False
        with self._latest_lock:
            if isinstance(self._latest, CapturedFrame):
                self.stats.dropped += 1
            self._latest = item
            self._latest_lock.notify_all()
        return not self._stop.is_set()

    def _run(self) -> None:
        try:
            self._run_source()
        except Exception as exc:  # noqa: BLE001 - a thread must hand its failure to the consumer
            log.error("capture of %s failed: %s", self.source, exc)
            self._deliver(_End(f"capture of {self.source!r} failed: {exc}", error=True))

    def _run_source(self) -> None:
        sequence = 0
        backoff = self.reopen_initial_s
        live_reopens = self.kind is not SourceKind.FILE and self.mode is CaptureMode.LIVE
        while not self._stop.is_set():
            capture = self._open()
            if capture is None:
                if not live_reopens:
                    self._deliver(_End(f"could not open video source {self.source!r}: check the path, camera index or URL.",
                                       error=True))
                    return
                delay = random.uniform(backoff / 2, backoff)
                log.warning("could not open %s; retrying in %.1f s", self.source, delay)
                self._stop.wait(delay)
                backoff = min(backoff * 2, self.reopen_max_s)
                continue
            if sequence:
                self.stats.reopened += 1
                log.warning("reopened %s after it was lost", self.source)
            backoff = self.reopen_initial_s
            period_s = 1.0 / self.fps if self.pace and self.fps else 0.0
            next_due = time.monotonic()
            try:
                while not self._stop.is_set():
                    if self.max_frames is not None and sequence >= self.max_frames:
                        self._deliver(_End(f"read the {self.max_frames} frames asked for from {self.source!r}", error=False))
                        return
                    if period_s:
                        next_due += period_s
                        self._stop.wait(max(0.0, next_due - time.monotonic()))
                    started = time.perf_counter()
                    ok, image = capture.read()
                    if not ok or image is None:
                        break
                    frame = CapturedFrame(sequence, image, time.time_ns(), time.monotonic_ns(),
                                          time.perf_counter() - started)
                    sequence += 1
                    self.stats.grabbed += 1
                    if not self._deliver(frame):
                        return
            finally:
                capture.release()
            if self._stop.is_set():
                return
            if not live_reopens:
                reason = (f"the video {self.source!r} ended after {sequence} frames" if sequence
                          else f"no frame could be read from {self.source!r}: is it a video OpenCV can decode?")
                self._deliver(_End(reason, error=sequence == 0))
                return
            log.warning("lost video source %s after frame %d; reopening with backoff", self.source, sequence - 1)


class EndOfSource(Exception):
    """The source has ended: `reason` says why; `error` is true when it ended by a failure."""

    def __init__(self, reason: str, error: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
