"""Short, bounded runs of the atheris harnesses (the long runs are in tests/fuzz/README.md).

Each harness runs in its own process (libFuzzer ends the process it runs in) on a corpus seeded from
the real activations in ../shared/data; a crash (any exception but the documented ones) fails the test
and leaves the input that caused it in the test's temporary folder.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_path

HERE = Path(__file__).resolve().parent


def run_harness(name: str, seconds: int, tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed: pip install -e '.[dev]' (or pip install atheris) to fuzz")
    shared_path("activations", "yolo-fastest-1.1-xl.npz")
    corpus = tmp_path / "corpus"
    command = [sys.executable, str(HERE / f"{name}.py"), f"-max_total_time={seconds}", "-timeout=60",
               f"-artifact_prefix={tmp_path}/", str(corpus)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 240, cwd=REPO)
    output = done.stdout + done.stderr
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert done.returncode == 0 and not crashes, f"{name} found a defect ({crashes}):\n{output[-6000:]}"
    assert "Done " in output and any(corpus.iterdir()), output[-2000:]


def test_the_decoder_survives_a_short_fuzz_run(tmp_path) -> None:
    run_harness("fuzz_decoder", 5, tmp_path)


@pytest.mark.slow
def test_the_servicer_message_handling_survives_a_short_fuzz_run(tmp_path) -> None:
    run_harness("fuzz_servicer", 10, tmp_path)
