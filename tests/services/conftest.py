"""Fixtures for the service tests: the real model and video from ../shared/data, clouds on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from splitinfer.channel_security import ChannelSecurity
from tests.conftest import shared_path

VIDEO = ("video", "one-by-one-person-detection.mp4")
WEIGHTS = ("models", "yolo-fastest-1.1")
MODEL = "yolo-fastest-1.1-xl"
CUT = "80"  # pinned, so that the tests do not follow changes of the model's default cut
REPO = Path(__file__).resolve().parents[2]
# The service tests talk over loopback without TLS, as they must say explicitly; tests/services/test_security.py
# covers TLS and authorization.
PLAINTEXT = ChannelSecurity(plaintext=True)


@pytest.fixture(scope="session")
def video() -> Path:
    return shared_path(*VIDEO)


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    return shared_path(*WEIGHTS)


@pytest.fixture(scope="session")
def model(weights_dir: Path):
    from splitinfer.dnn import load_model

    return load_model(MODEL, weights=str(weights_dir))


@pytest.fixture(scope="session")
def engine(model):
    from splitinfer.services.cloud.engine import TailEngine

    return TailEngine(model)


def run(coro, timeout: float = 120.0):
    """Run a coroutine on a fresh event loop, bounded by `timeout` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def running_cloud(engine, **config) -> AsyncIterator:
    """An in-process CloudServer on a free loopback port sharing the session's model."""
    from splitinfer.services.cloud.server import CloudConfig, CloudServer

    # No max lag unless a test sets one: many tests subscribe, stream, then read, and on a loaded machine the
    # streaming alone can take longer than the default 10 s (tests/services/test_slow_subscribers.py tests the lag).
    settings = dict(model=engine.model_name, host="127.0.0.1", port=0, metrics_port=-1, drain_seconds=5.0,
                    subscriber_max_lag_s=0.0)
    if not any(key.startswith("tls_") for key in config):
        settings["plaintext"] = True
    settings.update(config)
    server = CloudServer(CloudConfig(**settings), engine=engine)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CloudProcess:
    """`python -m splitinfer.cli cloud` as a subprocess on a chosen port."""

    def __init__(self, weights_dir: Path, port: int, tmp_path: Path, *extra: str) -> None:
        if not any(flag.startswith("--tls-") for flag in extra):
            extra = ("--plaintext", *extra)
        if "--subscriber-max-lag" not in extra:  # as running_cloud: tests that read after streaming, on a busy CPU
            extra = ("--subscriber-max-lag", "0", *extra)
        self.port = port
        self.port_file = tmp_path / f"cloud-{port}-{time.monotonic_ns()}.port"
        self.log = tmp_path / f"cloud-{port}-{time.monotonic_ns()}.log"
        command = [sys.executable, "-m", "splitinfer.cli", "cloud", "--host", "127.0.0.1", "--port", str(port),
                   "--metrics-port", "-1", "--port-file", str(self.port_file), "--weights", str(weights_dir),
                   "--log-level", "INFO", *extra]
        self._log_file = open(self.log, "w")  # noqa: SIM115 - closed in close()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_serving(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"cloud exited with {self.process.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"cloud did not serve within {timeout} s:\n{self.log.read_text()}")
            time.sleep(0.05)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._log_file.close()


@pytest.fixture
def cloud_process(weights_dir: Path, tmp_path: Path) -> Iterator:
    """A factory of cloud subprocesses, all killed at the end of the test."""
    started: list[CloudProcess] = []

    def start(port: int | None = None, *extra: str) -> CloudProcess:
        process = CloudProcess(weights_dir, port or free_port(), tmp_path, *extra)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def edge_pipeline(model, cut: str | None = CUT, **codec):
    """The real edge pipeline for `cut` with the codec flags `codec` (profile=, levels=, ...), resolved as the edge does."""
    from splitinfer.services.edge.pipeline import EdgePipeline
    from splitinfer.services.profiles import CodecSettings, resolve_profile

    return EdgePipeline(model, resolve_profile(model, cut, CodecSettings(**codec)),
                        percentile_levels=codec.get("levels") or 8)


def encoded_frames(model, video: Path, count: int, **codec) -> list:
    """The first `count` frames of the video as FeatureFrames, coded by the real edge pipeline."""
    from splitinfer.services.edge.capture import FrameGrabber

    pipeline = edge_pipeline(model, CUT, **codec)
    with FrameGrabber(str(video), max_frames=count) as grabber:
        return [pipeline.encode(pipeline.run_head(frame)) for frame in grabber.frames()]
