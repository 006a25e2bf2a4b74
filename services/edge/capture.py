"""Video capture with OpenCV: one grabber thread per source, frames stamped at grab time.

Live sources (camera index, RTSP, HTTP) keep only the newest frame: a slow consumer sees fresh frames
and the frames it never took are counted as dropped. Files deliver every frame through a bounded queue
(the reader waits when the consumer is slow). A lost live source is reopened with exponential backoff;
a file that ends, or a live source in `file` mode that ends, finishes the stream. A live source that
gives no frame for `source_timeout_s` ends the stream as a failure, with the reason OpenCV, FFmpeg or a
probe of the address gave (404, connection refused, no such device). A file that ends well before the
frame count its header reports is truncated or corrupt: a failure unless `allow_truncated`.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import queue
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitinfer.logs import NativeStderr
from splitinfer.errors import CaptureError

log = logging.getLogger("splitinfer.edge.capture")


class SourceKind(enum.Enum):
    CAMERA = "camera"
    FILE = "file"
    NETWORK = "network"


class CaptureMode(enum.Enum):
    """live: newest frame wins (drops counted); file: every frame, in order."""

    LIVE = "live"
    FILE = "file"


_DEVICE = re.compile(r"^/dev/video\d+$")
# A file that ends this far short of its header's frame count is truncated (headers round a little).
TRUNCATION_TOLERANCE = 0.02


def source_kind(source: str) -> SourceKind:
    """Classify a --source value: a camera index or /dev/videoN is a camera, a URL a network stream, else a file."""
    text = source.strip()
    if not text:
        raise CaptureError("the video source is empty: pass a camera index (0), a file path or an rtsp:// or http:// URL.")
    if text.isdigit() or _DEVICE.match(text):
        return SourceKind.CAMERA
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp"):
            raise CaptureError(f"unsupported source scheme {scheme!r} in {source!r}: use rtsp://, http:// or https://.")
        return SourceKind.NETWORK
    return SourceKind.FILE


def device_path(source: str) -> str | None:
    """The V4L2 device a camera source names (/dev/videoN, or /dev/video<index> on Linux); None elsewhere."""
    text = source.strip()
    if _DEVICE.match(text):
        return text
    if text.isdigit() and os.path.isdir("/dev") and os.name == "posix" and os.uname().sysname == "Linux":
        return f"/dev/video{int(text)}"
    return None


def check_source(source: str) -> SourceKind:
    """Check a --source before anything slow happens: the file or device exists, the scheme is known.

    Raises CaptureError saying what is wrong and what to pass instead.
    """
    kind = source_kind(source)
    if kind is SourceKind.FILE:
        path = Path(source)
        if path.is_dir():
            raise CaptureError(f"--source {source!r} is a folder, not a video file: pass a video file, a camera "
                               "index (0), /dev/videoN or an rtsp:// or http:// URL.")
        if not path.is_file():
            raise CaptureError(f"video file {source!r} does not exist: check the path passed to --source (or pass a "
                               "camera index such as 0, /dev/videoN, or an rtsp:// or http:// URL).")
        if not os.access(path, os.R_OK):
            raise CaptureError(f"video file {source!r} is not readable by this user: check its permissions.")
    elif kind is SourceKind.CAMERA:
        device = device_path(source)
        if device is not None:
            problem = _device_problem(device)
            if problem:
                raise CaptureError(f"camera {source!r}: {problem}")
    return kind


def _device_problem(device: str) -> str | None:
    """Why a V4L2 device cannot be opened (missing, not permitted), or None when it can be."""
    if not os.path.exists(device):
        present = sorted(p for p in os.listdir("/dev") if p.startswith("video")) if os.path.isdir("/dev") else []
        found = ", ".join(f"/dev/{p}" for p in present) if present else "no /dev/video* devices at all"
        return (f"no such device {device} (found: {found}); plug the camera in, pass the right index or "
                "/dev/videoN, or in a container pass the device through (docker run --device).")
    try:
        fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied opening {device}: add this user to the 'video' group."
        return f"cannot open {device}: {exc.strerror}."
    os.close(fd)
    return None


def probe_reason(source: str, timeout_s: float = 3.0) -> str | None:
    """Why a network or camera source does not open, asked of the source itself (HTTP status, RTSP status, errno)."""
    kind = source_kind(source)
    if kind is SourceKind.CAMERA:
        device = device_path(source)
        return _device_problem(device) if device else None
    if kind is not SourceKind.NETWORK:
        return None
    url = urllib.parse.urlsplit(source)
    scheme = url.scheme.lower()
    try:
        if scheme in ("http", "https"):
            request = urllib.request.Request(source, method="GET")
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - the user's URL
                if response.status >= 400:
                    return f"HTTP {response.status} {response.reason}"
                kind_header = response.headers.get("Content-Type", "")
                return f"the server answered HTTP {response.status} ({kind_header or 'no content type'}) but no video"
        if scheme == "rtsp":
            port = url.port or 554
            with socket.create_connection((url.hostname or "localhost", port), timeout=timeout_s) as sock:
                sock.sendall(f"DESCRIBE {source} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode())
                status = sock.recv(4096).split(b"\r\n", 1)[0].decode("latin-1").strip()
            parts = status.split(" ", 2)
            if len(parts) >= 2 and parts[1].isdigit() and int(parts[1]) >= 300:
                return f"RTSP {parts[1]} {parts[2] if len(parts) > 2 else ''}".strip()
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        return f"{getattr(reason, 'strerror', None) or reason}"
    except OSError as exc:
        return f"{exc.strerror or exc}"
    return None


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
    # The frame's time in the source: its position in a file (index / fps), else when it was grabbed. Rate
    # control budgets in these seconds, so a file replayed faster than real time gets a live camera's bytes.
    position_s: float | None = None

    @property
    def source_time_s(self) -> float:
        return self.monotonic_ns / 1e9 if self.position_s is None else self.position_s


@dataclass
class CaptureStats:
    grabbed: int = 0
    delivered: int = 0
    dropped: int = 0
    reopened: int = 0
    failures: int = 0  # opens that failed and reads that stopped


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
        source_timeout_s: float = 0.0,
        rtsp_transport: str | None = None,
        width: int | None = None,
        height: int | None = None,
        request_fps: float | None = None,
        allow_truncated: bool = False,
    ) -> None:
        self.source = source
        self.kind = source_kind(source)
        self.mode = mode or default_mode(self.kind)
        if self.kind is SourceKind.FILE and not Path(source).is_file():
            raise CaptureError(f"video file {source!r} does not exist: check the path passed to --source.")
        if rtsp_transport not in (None, "tcp", "udp"):
            raise CaptureError(f"the RTSP transport must be tcp or udp, got {rtsp_transport!r}.")
        if source_timeout_s < 0:
            raise CaptureError(f"the source timeout must be 0 (wait forever) or more seconds, got {source_timeout_s}.")
        if max_frames is not None and max_frames < 1:
            raise CaptureError(f"max_frames must be at least 1, got {max_frames}.")
        if queue_size < 1:
            raise CaptureError(f"the capture queue needs room for at least one frame, got {queue_size}.")
        self.max_frames = max_frames
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.reopen_initial_s = reopen_initial_s
        self.reopen_max_s = reopen_max_s
        self.source_timeout_s = source_timeout_s
        self.rtsp_transport = rtsp_transport
        self.width, self.height, self.request_fps = width, height, request_fps
        self.allow_truncated = allow_truncated
        self.frame_count: int | None = None  # what the file's header says, when it says
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
            text = self.source.strip()
            capture = cv2.VideoCapture(int(text) if text.isdigit() else text)
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
                                (cv2.CAP_PROP_FPS, self.request_fps)):
                if value and capture.isOpened():
                    capture.set(prop, value)  # a request: the driver picks the nearest mode it has
        elif self.kind is SourceKind.NETWORK:
            if self.rtsp_transport and self.source.lower().startswith("rtsp"):
                # OpenCV reads FFmpeg's open options from this variable at each open.
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{self.rtsp_transport}"
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
        if self.kind is SourceKind.FILE:
            count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
            self.frame_count = int(count) if count and count > 0 else None
        return capture

    def _failure_reason(self, since: float) -> str:
        """What the source or the native libraries said about the last failure, in one clause."""
        reason = probe_reason(self.source, timeout_s=min(3.0, self.open_timeout_s))
        if reason:
            return reason
        native = [line for line in NativeStderr.recent_lines(since) if "error" in line.lower() or "fail" in line.lower()]
        if native:
            return native[-1]
        if self.kind is SourceKind.CAMERA:
            return "the camera did not deliver a frame (in use by another program, or no such camera)"
        return "OpenCV gave no reason"

    def _truncation(self, sequence: int) -> str | None:
        """A message when a file ended well before its header's frame count, else None."""
        count = self.frame_count
        if count is None or self.max_frames is not None and sequence >= self.max_frames:
            return None
        if sequence >= count * (1.0 - TRUNCATION_TOLERANCE) or count - sequence <= 1:
            return None
        return (f"the video {self.source!r} ended after {sequence} of the {count} frames its header reports: the "
                "file is truncated or corrupt (re-copy or re-encode it; --allow-truncated accepts it as it is)")

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
        last_frame = time.monotonic()  # when the source last gave a frame (or the grabber started)
        while not self._stop.is_set():
            attempt_started = time.monotonic()
            capture = self._open()
            if capture is None:
                self.stats.failures += 1
                reason = self._failure_reason(attempt_started)
                if not live_reopens:
                    self._deliver(_End(f"could not open video source {self.source!r} ({reason}): check the path, "
                                       "camera index or URL.", error=True))
                    return
                waited = time.monotonic() - last_frame
                if self.source_timeout_s and waited >= self.source_timeout_s:
                    self._deliver(_End(f"gave up on video source {self.source!r} after {waited:.0f} s without a frame "
                                       f"(--source-timeout {self.source_timeout_s:g}): {reason}", error=True))
                    return
                delay = random.uniform(backoff / 2, backoff)
                if self.source_timeout_s:  # the last try comes at the timeout, not a backoff after it
                    delay = min(delay, max(0.0, self.source_timeout_s - waited))
                log.warning("could not open %s (%s); retrying in %.1f s", self.source, reason, delay)
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
                    position = sequence / self.fps if self.kind is SourceKind.FILE and self.fps else None
                    frame = CapturedFrame(sequence, image, time.time_ns(), time.monotonic_ns(),
                                          time.perf_counter() - started, position)
                    last_frame = time.monotonic()
                    sequence += 1
                    self.stats.grabbed += 1
                    if not self._deliver(frame):
                        return
            finally:
                capture.release()
            if self._stop.is_set():
                return
            if not live_reopens:
                truncated = self._truncation(sequence)
                if truncated:
                    log.warning("%s", truncated)
                    self._deliver(_End(truncated, error=not self.allow_truncated))
                    return
                reason = (f"the video {self.source!r} ended after {sequence} frames" if sequence
                          else f"no frame could be read from {self.source!r}: is it a video OpenCV can decode?")
                self._deliver(_End(reason, error=sequence == 0))
                return
            self.stats.failures += 1
            waited = time.monotonic() - last_frame
            if self.source_timeout_s and waited >= self.source_timeout_s:
                self._deliver(_End(f"gave up on video source {self.source!r} after {waited:.0f} s without a frame "
                                   f"(--source-timeout {self.source_timeout_s:g}): "
                                   f"{self._failure_reason(attempt_started)}", error=True))
                return
            log.warning("lost video source %s after frame %d; reopening with backoff", self.source, sequence - 1)


class EndOfSource(Exception):
    """The source has ended: `reason` says why; `error` is true when it ended by a failure."""

    def __init__(self, reason: str, error: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
