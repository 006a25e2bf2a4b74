"""--log-format json: every line a command writes on stderr and stdout is one JSON object, from the first log line
to the final `splitinfer: error: ...`, the demo's progress and summary included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_path
from tests.services.test_capture import _StatusServer

REPO = Path(__file__).resolve().parents[2]


def _records(*argv: str) -> tuple[int, list[dict]]:
    """Run `splitinfer ARGV --log-format json` as the console script does; every stdout and stderr line, parsed
    (a line that is not a JSON object fails the test, naming it)."""
    done = subprocess.run([sys.executable, "-m", "splitinfer.cli", *argv, "--log-format", "json"], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    records = []
    for stream in (done.stdout, done.stderr):
        for line in stream.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"not JSON: {line!r}\nstderr:\n{done.stderr[-3000:]}")
            assert isinstance(record, dict), line
            records.append(record)
    return done.returncode, records


def test_a_refused_setting_ends_with_a_json_error_record() -> None:
    rc, records = _records("edge", "--source", "missing-clip.mp4", "--connect-timeout", "0")
    assert rc == 2 and records
    last = records[-1]
    assert last["level"] == "ERROR" and last["message"].startswith("splitinfer: error: --source:"), records
    assert {"time", "logger"} <= set(last)


@pytest.mark.slow
def test_a_source_that_gives_up_logs_only_json_native_lines_included() -> None:
    """The demo's cloud and edge start (torch, FFmpeg), the RTSP camera answers 404 until --source-timeout: FFmpeg's
    own lines, the retries and the final error are all JSON records."""
    with _StatusServer(b"RTSP/1.0 404 Not Found") as server:
        rc, records = _records("demo", "--source", f"rtsp://127.0.0.1:{server.port}/cam", "--source-timeout", "1",
                               "--rtsp-transport", "tcp", "--log-level", "INFO")
    assert rc == 2
    assert records[-1]["level"] == "ERROR" and "gave up on video source" in records[-1]["message"], records[-3:]
    assert any(r["logger"] == "splitinfer.native" for r in records), "FFmpeg said nothing: the case is not covered"


@pytest.mark.slow
def test_a_demo_that_succeeds_writes_only_json_progress_and_summary_included() -> None:
    shared_path("video")
    rc, records = _records("demo", "--frames", "4", "--log-level", "INFO")
    assert rc == 0
    messages = [r["message"] for r in records]
    assert any(m.startswith("frames answered") for m in messages), messages
    assert any("kbit/s of source time" in m for m in messages), messages


@pytest.mark.slow
def test_a_cloud_that_serves_and_stops_writes_only_json(tmp_path) -> None:
    import signal
    import time

    port_file = tmp_path / "port"
    process = subprocess.Popen([sys.executable, "-m", "splitinfer.cli", "cloud", "--plaintext", "--host", "127.0.0.1",
                                "--port", "0", "--metrics-port", "-1", "--port-file", str(port_file), "--log-format",
                                "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 300
        while not port_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err[-3000:]
    records = [json.loads(line) for line in (out + err).splitlines()]  # a line that is not JSON fails here
    messages = [r["message"] for r in records]
    assert any(m.startswith("splitinfer cloud: serving") for m in messages), messages
    assert "splitinfer cloud: stopped" in messages
