"""Logging for every command: one `splitinfer` logger hierarchy, text or JSON lines on stderr.

Native libraries (OpenCV, FFmpeg) write their warnings straight to file descriptor 2. `NativeStderr`
routes those lines through the `splitinfer.native` logger, so they come out in the chosen format and
level instead of mixing into it, and keeps the last few so an error message can quote the reason a
library gave (e.g. FFmpeg's "404 Not Found").
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TextIO

from splitinfer.settings import Option

LOG_OPTIONS = [
    Option("log-level", "Logging level on stderr.", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    Option("log-format", "Log lines as text, or as one JSON object per line (time, level, logger, message).",
           default="text", choices=("text", "json")),
]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_NATIVE_LEVEL = re.compile(r"^\[\s*(?P<level>WARN|ERROR|INFO|DEBUG|FATAL)[:\]]")
# gRPC's own (abseil) lines: a severity letter and the date, e.g. "I1130 00:04:23.852884 ..."
_GRPC_LEVEL = re.compile(r"^(?P<letter>[IWEF])\d{4} \d\d:\d\d:\d\d")
_GRPC_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
_NATIVE_LEVELS = {"WARN": logging.WARNING, "ERROR": logging.ERROR, "INFO": logging.INFO, "DEBUG": logging.DEBUG,
                  "FATAL": logging.CRITICAL}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry = {"time": f"{created}.{int(record.msecs):03d}Z", "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        event = getattr(record, "event", None)  # structured fields: log.info(..., extra={"event": {...}})
        if isinstance(event, dict):
            entry.update({k: v for k, v in event.items() if k not in entry})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def json_logs() -> bool:
    """Whether this process logs JSON (configure_logging(..., "json") was called): lines written outside the
    logging module (progress, summaries, the final error) then go out as JSON records too."""
    return any(h.get_name() == "splitinfer" and isinstance(h.formatter, JsonFormatter)
               for h in logging.getLogger().handlers)


def say(message: str, *, stream: TextIO | None = None, logger: str = "splitinfer", level: str = "INFO",
        end: str = "\n", as_json: bool | None = None, fields: Mapping[str, object] | None = None) -> None:
    """Write a line meant for people to `stream` (stdout): as it is, or as one JSON record (time, level, logger,
    message and `fields`) under --log-format json, so that every line a command writes parses. `as_json` overrides
    what the logging configuration says (for lines written after it is taken down)."""
    out = stream or sys.stdout
    if json_logs() if as_json is None else as_json:
        created = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        entry = {"time": f"{stamp}.{int(created * 1000) % 1000:03d}Z", "level": level, "logger": logger,
                 "message": message.strip("\r\n"), **(fields or {})}
        out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    else:
        out.write(message + end)
    out.flush()


def configure_logging(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record (ours and libraries') to `stream` (stderr) in the chosen format; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name("splitinfer")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "splitinfer":  # ours from an earlier call (tests run several commands in one process)
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler


def native_level(line: str) -> int:
    """The level of a native log line: OpenCV tags its own ([ WARN:0@1.2]); FFmpeg's are warnings."""
    match = _NATIVE_LEVEL.match(line)
    if match:
        return _NATIVE_LEVELS[match.group("level")]
    grpc_line = _GRPC_LEVEL.match(line)
    return _GRPC_LEVELS[grpc_line.group("letter")] if grpc_line else logging.WARNING


class NativeStderr:
    """Routes file descriptor 2 through the `splitinfer.native` logger while active (a context manager).

    Python's own stderr (and the log handler) keep writing to the original descriptor. One named reader
    thread turns each native line into a log record; `recent()` returns the last lines for error messages.
    """

    _active: NativeStderr | None = None  # the descriptor is process-wide, so at most one router is

    def __init__(self, keep: int = 20) -> None:
        self._recent: collections.deque[tuple[float, str]] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self._saved_fd: int | None = None
        self._read_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._saved_stderr: TextIO | None = None
        self._quiet_until = 0.0
        self._quiet_depth = 0
        self.log = logging.getLogger("splitinfer.native")

    def __enter__(self) -> NativeStderr:
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._read_fd = read_fd
        self._saved_stderr = sys.stderr
        sys.stderr = os.fdopen(os.dup(self._saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self._saved_stderr:
                handler.setStream(sys.stderr)
        self._thread = threading.Thread(target=self._pump, name="native-stderr", daemon=True)
        self._thread.start()
        NativeStderr._active = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        NativeStderr._active = None
        if self._saved_fd is None:
            return
        os.dup2(self._saved_fd, 2)  # closes the pipe's last writer, so the reader sees end of file
        if self._thread is not None:
            self._thread.join(2.0)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(self._saved_stderr)
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = self._saved_stderr
        os.close(self._saved_fd)
        self._saved_fd = None

    def _pump(self) -> None:
        assert self._read_fd is not None
        with os.fdopen(self._read_fd, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                now = time.monotonic()
                with self._lock:
                    self._recent.append((now, line))
                    quiet = self._quiet_depth > 0 or now <= self._quiet_until
                self.log.log(logging.DEBUG if quiet else native_level(line), "%s", line)

    def recent(self, since: float = 0.0) -> list[str]:
        """Native lines logged at or after monotonic time `since`, oldest first."""
        with self._lock:
            return [line for stamp, line in self._recent if stamp >= since]

    @classmethod
    @contextlib.contextmanager
    def quiet(cls, grace_s: float = 0.3) -> Iterator[None]:
        """Native lines printed meanwhile (and read within `grace_s` after) are logged at DEBUG: an expected
        failure, such as probing for an H.264 encoder this OpenCV build lacks, is not an error."""
        active = cls._active
        if active is None:
            yield
            return
        with active._lock:
            active._quiet_depth += 1
        try:
            yield
        finally:
            with active._lock:
                active._quiet_depth -= 1
                active._quiet_until = time.monotonic() + grace_s

    @classmethod
    def recent_lines(cls, since: float = 0.0) -> list[str]:
        """`recent` of the active router; empty when native output is not being routed."""
        active = cls._active
        return active.recent(since) if active is not None else []
