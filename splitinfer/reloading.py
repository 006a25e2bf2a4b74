"""A configuration file re-read when it changes (a Kubernetes Secret is updated in place), keeping the last good one.

The access file and the bus's result-key file share this: `current()` checks the file's mtime and size on each
call, reloads on a change, and a change that does not load is logged and the previous value stays.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from splitinfer.errors import SplitInferError

T = TypeVar("T")


def read_yaml(path: Path, flag: str, error: type[Exception]) -> Any:
    """The parsed YAML document at `path`; `error` saying which flag's file cannot be read or is not YAML."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{flag} {path} cannot be read ({exc.strerror or exc}).") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{flag} {path} is not valid YAML: {exc}") from exc


class ReloadingFile(Generic[T]):
    """`load(path)` once now (its error propagates: a bad file at start is fatal), and again whenever it changes."""

    def __init__(self, path: Path, load: Callable[[Path], T], *, logger: logging.Logger, what: str,
                 kept: str = "version") -> None:
        self.path = path
        self._load = load
        self._log = logger
        self._what = what
        self._kept = kept  # what the log line says is kept when a change does not load
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self.value: T = load(path)
        self.reloads = 0

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> T:
        """The value, re-read first if the file changed; a change that does not load keeps the old value."""
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return self.value
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self.value = self._load(self.path)
                    self.reloads += 1
                    self._log.info("%s %s reloaded", self._what, self.path)
                except SplitInferError as exc:
                    self._log.error("%s %s changed but does not load; keeping the previous %s: %s", self._what,
                                    self.path, self._kept, exc)
        return self.value
