"""`splitinfer cloud` and `splitinfer edge` as real processes on the two sides of a ShapedLink (tests/netlink.py).

Shared by tests/services/test_shaped_link.py and bench/shaped_link.py: the cloud listens on the cloud
namespace's address; the edge runs in the edge namespace and its JSON lines are read as they come, so a caller
can cut the link or change its shape after a given result.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.netlink import ShapedLink

REPO = Path(__file__).resolve().parents[2]
CLOUD_PORT = 50051
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
_DONE = re.compile(r"done: (\d+) frames grabbed, (\d+) dropped by the live grabber, (\d+) sent, (\d+) results "
                   r"\((\d+) frame errors\), (\d+) reconnects, (\d+) resent, (\d+) lost on reconnect")
_DONE_FIELDS = ("grabbed", "dropped", "sent", "results", "frame_errors", "reconnects", "resent", "lost_on_reconnect")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (/proc/PID/stat; NaN once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_cloud(link: ShapedLink, weights: Path, folder: Path, *extra: str) -> subprocess.Popen:
    """`splitinfer cloud --plaintext` on the cloud side; returns once it serves (AssertionError with its log if not)."""
    port_file, log = folder / "cloud.port", folder / "cloud.log"
    port_file.unlink(missing_ok=True)
    with open(log, "w") as log_file:
        process = link.popen("cloud", [sys.executable, "-m", "splitinfer.cli", "cloud", "--plaintext", "--host",
                                       link.cloud_address, "--port", str(CLOUD_PORT), "--metrics-port", "-1",
                                       "--port-file", str(port_file), "--weights", str(weights), *extra],
                             stdout=log_file, stderr=subprocess.STDOUT, env=ENV, cwd=REPO)
    deadline = time.monotonic() + 180
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the cloud did not serve (exit {process.poll()}):\n{log.read_text()}")
        time.sleep(0.1)
    return process


def write_clip(video: Path, path: Path, frames: int, *, stride: int = 1, fps: float = 10.0) -> Path:
    """Every `stride`-th of the video's first frames, `frames` of them, as a lossless FFV1 clip at `fps`: a source
    that a live-mode sender reads at that pace, like a camera."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    writer = None
    written = read = 0
    while written < frames:
        ok, image = capture.read()
        if not ok:
            break
        read += 1
        if (read - 1) % stride:
            continue
        if writer is None:
            height, width = image.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), fps, (width, height))
            if not writer.isOpened():
                raise RuntimeError("this OpenCV build cannot write FFV1 video")
        writer.write(image)
        written += 1
    capture.release()
    if writer is None:
        raise RuntimeError(f"no frame could be read from {video}")
    writer.release()
    return path


def edge_supports(flag: str) -> bool:
    """Whether this build's `splitinfer edge` has `flag` (e.g. --rate-kbps)."""
    done = subprocess.run([sys.executable, "-m", "splitinfer.cli", "edge", "--help"], check=False, capture_output=True, text=True,
                          timeout=120, env=ENV, cwd=REPO)
    return flag in done.stdout


@dataclass
class EdgeRun:
    """What one `splitinfer edge` run printed: its JSON lines, stderr, exit code and the final counters."""

    results: list[dict] = field(default_factory=list)
    returncode: int | None = None
    stderr: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    # The sender's CPU seconds (user + system) when each result was read: its steady-state CPU per frame,
    # without the start-up (imports, model load).
    cpu_s: list[float] = field(default_factory=list)

    @property
    def frame_ids(self) -> list[int]:
        return [int(r["frame_id"]) for r in self.results]

    def steady(self, after_s: float = 2.0) -> list[dict]:
        """The results of frames captured `after_s` or more after the first result arrived: the start-up (the
        first frames wait for the cloud's first decode, and a live grabber drops frames meanwhile) left out."""
        if not self.results:
            return []
        start = self.arrival_ns(self.results[0]) + int(after_s * 1e9)
        return [r for r in self.results if int(r["capture"]["capture_monotonic_ns"]) >= start]

    def arrival_ns(self, result: dict) -> int:
        """When `result` reached the edge, on the machine's monotonic clock (the same in every namespace)."""
        return int(result["capture"]["capture_monotonic_ns"]) + int(result["latency_s"] * 1e9)


def run_edge(link: ShapedLink, source: Path, weights: Path, folder: Path, stream_id: str, *extra: str,
             on_result: Callable[[int, dict], None] | None = None, timeout_s: float = 300.0,
             env: dict[str, str] | None = None) -> EdgeRun:
    """Run `splitinfer edge --plaintext` on the edge side until it exits; `on_result(n, record)` after each line.

    `extra` are more edge flags (--frames, --mode, --rate-kbps ...), `env` more environment variables. The edge
    is killed after `timeout_s`.
    """
    argv = [sys.executable, "-m", "splitinfer.cli", "edge", "--plaintext", "--source", str(source), "--cloud",
            f"{link.cloud_address}:{CLOUD_PORT}", "--stream-id", stream_id, "--weights", str(weights), "--device",
            "cpu", "--log-level", "INFO", *extra]
    return run_json_lines(link, argv, folder / f"edge-{stream_id}.log", on_result=on_result, timeout_s=timeout_s,
                          env=env)


def run_json_lines(link: ShapedLink, argv: Sequence[str], stderr_path: Path, *,
                   on_result: Callable[[int, dict], None] | None = None, timeout_s: float = 300.0,
                   env: dict[str, str] | None = None) -> EdgeRun:
    """Run a sender that prints JSON lines and a `done:` line as `splitinfer edge` does, on the edge side."""
    run = EdgeRun()
    with open(stderr_path, "w") as stderr_file:
        process = link.popen("edge", argv, stdout=subprocess.PIPE, stderr=stderr_file, text=True,
                             env={**ENV, **(env or {})}, cwd=REPO)
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            record = json.loads(line)
            run.results.append(record)
            run.cpu_s.append(process_cpu_s(process.pid))
            if on_result is not None:
                on_result(len(run.results), record)
        run.returncode = process.wait(30)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait(30)
        if process.stdout is not None:
            process.stdout.close()
    run.stderr = stderr_path.read_text()
    done = _DONE.search(run.stderr)
    if done:
        run.counters = dict(zip(_DONE_FIELDS, (int(g) for g in done.groups()), strict=True))
    return run
