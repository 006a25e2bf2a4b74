"""--runtime and --threads checked before any model loads (#20, "Install"): a runtime whose package is not installed
is refused by edge, eval and cloud with the pip extra to install, exit 2, and no model file opened. The package is
made absent for real: each command runs in a fresh interpreter whose import system cannot find it (a
sitecustomize.py on PYTHONPATH hides it from every finder). A negative --threads and a compiled runtime on a GPU
are refused the same way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_path

# Hides the packages named in $SPLITINFER_TEST_HIDE from every finder on sys.meta_path, so that
# importlib.util.find_spec returns None and an import fails as if they were not installed; reports on stderr any
# weights file opened (the sign that a model started loading).
SITECUSTOMIZE = '''
import os
import sys

HIDDEN = set(filter(None, os.environ.get("SPLITINFER_TEST_HIDE", "").split(",")))


class _Hiding:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        find = getattr(self._finder, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def __getattr__(self, name):
        return getattr(self._finder, name)


sys.meta_path[:] = [_Hiding(finder) for finder in sys.meta_path]


def _audit(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and os.fsdecode(args[0]).endswith(
            (".weights", ".onnx")):
        os.write(2, b"TEST-MODEL-FILE-OPENED " + os.fsencode(args[0]) + b"\\n")


sys.addaudithook(_audit)
'''


# `splitinfer ARGV` that also says whether torch was imported by the time it returned.
EDGE_CODE = ("import sys\nfrom splitinfer.cli import main\nrc = main(sys.argv[1:])\n"
             "print('TORCH-IMPORTED' if 'torch' in sys.modules else 'NO-TORCH')\nsys.exit(rc)\n")


@pytest.fixture(scope="module")
def hiding_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hide-runtime")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def _run(hiding_path: Path, hidden: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hiding_path), str(REPO)]), "SPLITINFER_TEST_HIDE": hidden}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.mark.parametrize("package", ["openvino", "onnxruntime"])
def test_the_hidden_package_is_absent_to_the_interpreter(hiding_path, package) -> None:
    """The control: the package is installed here, and hidden it cannot be found nor imported."""
    pytest.importorskip(package)
    code = (f"import importlib.util\nprint(importlib.util.find_spec({package!r}))\n"
            f"try:\n    import {package}\nexcept ImportError:\n    print('import failed')\n")
    done = _run(hiding_path, package, "-c", code)
    assert done.returncode == 0 and done.stdout.split("\n")[:2] == ["None", "import failed"], done.stderr
    unhidden = _run(hiding_path, "", "-c", code)
    assert unhidden.stdout.startswith("ModuleSpec("), unhidden.stderr


def _assert_refused(done: subprocess.CompletedProcess, runtime: str) -> None:
    assert done.returncode == 2, done.stderr
    assert f"--runtime {runtime} needs {runtime}, which is not installed" in done.stderr, done.stderr
    assert f"pip install 'splitinfer[{runtime}]' (or use --runtime torch)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "TEST-MODEL-FILE-OPENED" not in done.stderr, "the model started loading before the check"


def test_edge_without_openvino_names_the_extra_before_torch_loads(hiding_path) -> None:
    video = shared_path("video", "one-by-one-person-detection.mp4")
    done = _run(hiding_path, "openvino", "-c", EDGE_CODE, "edge", "--runtime", "openvino", "--source", str(video),
                "--plaintext", "--connect-timeout", "0", "--weights", str(shared_path("models", "yolo-fastest-1.1")),
                "--log-level", "INFO")
    _assert_refused(done, "openvino")
    assert "NO-TORCH" in done.stdout, "the check ran after torch was imported"
    assert "streaming" not in done.stderr


def test_eval_without_onnxruntime_names_the_extra_before_the_model_loads(hiding_path) -> None:
    done = _run(hiding_path, "onnxruntime", "-m", "splitinfer.cli", "eval",
                str(shared_path("coco-mini", "val2017")), "--codec", "default", "--limit", "2", "--runtime",
                "onnxruntime", "--weights", str(shared_path("models", "yolo-fastest-1.1")), "--json")
    _assert_refused(done, "onnxruntime")
    assert done.stdout == "" and "evaluating" not in done.stderr


def test_cloud_without_onnxruntime_names_the_extra_before_it_listens(hiding_path, tmp_path) -> None:
    port_file = tmp_path / "cloud.port"
    done = _run(hiding_path, "onnxruntime", "-m", "splitinfer.cli", "cloud", "--plaintext", "--runtime", "onnxruntime",
                "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1", "--port-file", str(port_file),
                "--weights", str(shared_path("models", "yolo-fastest-1.1")), "--log-level", "INFO")
    _assert_refused(done, "onnxruntime")
    assert "listening on port" not in done.stderr and "loading model" not in done.stderr
    assert not port_file.exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--threads", "-1"], "--threads must be 0 (automatic) or a positive count, got -1."),
    (["--runtime", "onnxruntime", "--device", "cuda"], "--runtime onnxruntime runs on the CPU: use --device cpu (or "
                                                        "auto), or --runtime torch for --device cuda."),
    (["--runtime", "tensorrt"], "argument --runtime: invalid choice: 'tensorrt'"),
])
def test_edge_refuses_bad_runtime_flags_before_torch_loads(hiding_path, argv, message) -> None:
    pytest.importorskip("onnxruntime")
    video = shared_path("video", "one-by-one-person-detection.mp4")
    done = _run(hiding_path, "", "-c", EDGE_CODE, "edge", "--source", str(video), "--plaintext", "--connect-timeout",
                "0", *argv)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "TEST-MODEL-FILE-OPENED" not in done.stderr, done.stderr
    assert "TORCH-IMPORTED" not in done.stdout


@pytest.mark.parametrize("command", [["eval", "--limit", "1"], ["cloud", "--plaintext", "--port", "0",
                                                                "--metrics-port", "-1"]])
def test_eval_and_cloud_refuse_a_negative_thread_count_before_the_model_loads(hiding_path, command) -> None:
    data = [str(shared_path("coco-mini", "val2017"))] if command[0] == "eval" else []
    done = _run(hiding_path, "", "-m", "splitinfer.cli", command[0], *data, *command[1:], "--threads", "-2",
                "--weights", str(shared_path("models", "yolo-fastest-1.1")))
    assert done.returncode == 2, done.stderr
    assert "--threads must be 0 (automatic) or a positive count, got -2." in done.stderr, done.stderr
    assert "TEST-MODEL-FILE-OPENED" not in done.stderr and "loading model" not in done.stderr

