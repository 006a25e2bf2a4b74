"""What users install: the wheel's package list and files, its CLI against a real cloud, and mypy on it.

The wheel is built from a clean copy of the tree (`pip wheel --no-deps --no-build-isolation`) and installed
non-editable, without dependencies, into a fresh venv. That venv borrows the dependencies of the environment
running the tests through a .pth file listing its site directories (its purelib, plus what its own .pth files
add), because a full dependency install would copy about 5 GB of torch on every run. Those .pth lines only add
paths: the test environment's editable-install hook is not run, so the only `splitinfer` importable there is
the wheel's (checked). The full check, dependencies included, is the README's commands on a fresh machine.
Every subprocess runs in a temporary folder: the repository root holds a `splitinfer/` folder that would
shadow the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
# Never part of a build: version control, environments, build outputs and caches.
NOT_SOURCES = (".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
               ".mypy_cache", ".cache", "out", ".whl", ".gl", "*.pyc", "*.nbi", "*.nbc")
CACHE_SUFFIXES = (".pyc", ".nbi", ".nbc")


def package_folder(package: str) -> Path:
    """The source folder of a package under the package-dir mapping (a child of a mapped package lies inside it)."""
    mapping: dict[str, str] = SETUPTOOLS["package-dir"]
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        parent = ".".join(parts[:cut])
        if parent in mapping:
            return REPO.joinpath(mapping[parent], *parts[cut:])
    return REPO.joinpath(*parts)


def derived_packages() -> list[str]:
    """Every folder holding an __init__.py under a mapped folder, named as the mapping says."""
    found = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            found.add(".".join((package, *init.parent.relative_to(root).parts)))
    return sorted(found)


# Folders inside a package folder that are not part of the package: examples in other languages (a Node.js
# decoder and consumer under clients/examples/), run from the checkout, never imported.
NOT_SHIPPED = {"__pycache__", "examples", "node_modules"}


def package_files(package: str) -> dict[str, Path]:
    """The files a package's folder holds (data subfolders included, subpackages and NOT_SHIPPED not), by wheel path."""
    root = package_folder(package)
    files: dict[str, Path] = {}
    pending = [root]
    while pending:
        folder = pending.pop()
        for path in sorted(folder.iterdir()):
            if path.is_dir():
                if path.name not in NOT_SHIPPED and not (path / "__init__.py").exists():
                    pending.append(path)
            elif path.suffix not in CACHE_SUFFIXES:
                files["/".join((*package.split("."), *path.relative_to(root).parts))] = path
    return files


@dataclass(frozen=True)
class WheelVenv:
    """A fresh venv with the wheel installed; commands run in `workdir`, away from the repository."""

    root: Path
    workdir: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def splitinfer(self) -> Path:
        return self.root / "bin" / "splitinfer"

    @property
    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}

    def run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(arg) for arg in args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.workdir, env=self.env)

    def plaintext(self, command: str) -> list[str]:
        """`--plaintext` where the command has the flag (TLS on by default), nothing where it does not."""
        help_text = self.run(self.splitinfer, command, "--help").stdout
        return ["--plaintext"] if "--plaintext" in help_text else []


def site_paths(python: str | Path, cwd: Path) -> list[str]:
    """sys.path of an interpreter started in isolated mode (no PYTHONPATH, no user site, no script folder)."""
    probe = subprocess.run([str(python), "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
                           capture_output=True, text=True, check=True, cwd=cwd, timeout=60)
    return json.loads(probe.stdout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a clean copy of the tree, so that a stale build/ folder cannot leak into it."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                            "-w", str(base / "dist")], capture_output=True, text=True, timeout=300, cwd=base)
    assert build.returncode == 0, f"pip wheel failed:\n{build.stdout}\n{build.stderr}"
    (built,) = (base / "dist").glob("splitinfer-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> WheelVenv:
    """The wheel installed non-editable and without dependencies into a fresh venv that borrows the test env's."""
    base = tmp_path_factory.mktemp("wheel-venv")
    installed = WheelVenv(base / "venv", base / "work")
    installed.workdir.mkdir()
    venv.create(installed.root)  # no pip of its own: the test environment's pip installs into it
    install = installed.run(sys.executable, "-m", "pip", "--python", installed.python, "install", "-q", "--no-deps",
                            "--no-index", wheel, timeout=300)
    assert install.returncode == 0, f"installing the wheel failed:\n{install.stdout}\n{install.stderr}"
    # Written after the install, so that pip does not see the test environment's splitinfer metadata.
    own = set(site_paths(installed.python, installed.workdir))
    sources = {REPO.resolve(), *(package_folder(package).resolve() for package in SETUPTOOLS["packages"])}
    borrowed = [p for p in site_paths(sys.executable, installed.workdir)
                if p not in own and Path(p).is_dir() and Path(p).resolve() not in sources]
    purelib = installed.run(installed.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(purelib.stdout.strip()) / "_test_dependencies.pth").write_text("".join(f"{p}\n" for p in borrowed))
    return installed


def test_the_package_list_is_every_package_folder() -> None:
    listed, derived = sorted(SETUPTOOLS["packages"]), derived_packages()
    assert listed == derived, (f"[tool.setuptools] packages in pyproject.toml lists {listed}, but the package-dir "
                               f"mapping and the folders holding __init__.py give {derived}: list every package")


def test_every_file_of_every_package_is_in_the_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    missing = sorted(name for package in SETUPTOOLS["packages"] for name in package_files(package)
                     if name not in shipped)
    assert not missing, (f"the wheel lacks {missing}: add data files to [tool.setuptools.package-data] in "
                         "pyproject.toml, or move files the package does not need out of its folder")
    for needed in ("splitinfer/py.typed", "splitinfer/dnn/coco.names", "splitinfer/dnn/cfg/yolov3-tiny.cfg",
                   "splitinfer/dnn/profiles/yolo-fastest-1.1-xl.json", "splitinfer/cli.py"):
        assert needed in shipped


def test_only_the_wheel_provides_splitinfer_in_its_venv(wheel_venv: WheelVenv) -> None:
    probe = wheel_venv.run(wheel_venv.python, "-c", "import splitinfer.cli; print(splitinfer.__file__)")
    assert probe.returncode == 0, probe.stderr
    location = Path(probe.stdout.strip())
    assert location.is_relative_to(wheel_venv.root), f"splitinfer was imported from {location}, not from the wheel"


def test_the_installed_command_line_and_every_subcommand_answer_help(wheel_venv: WheelVenv) -> None:
    listing = wheel_venv.run(wheel_venv.python, "-c", "import importlib, json; from splitinfer.cli import COMMAND_MODULES; "
                             "print(json.dumps([importlib.import_module(m).NAME for m in COMMAND_MODULES]))")
    assert listing.returncode == 0, listing.stderr
    commands = json.loads(listing.stdout)
    assert {"cloud", "edge", "watch", "demo"} <= set(commands)
    top = wheel_venv.run(wheel_venv.splitinfer, "--help")
    assert top.returncode == 0, top.stderr
    for command in commands:
        assert command in top.stdout
        answer = wheel_venv.run(wheel_venv.splitinfer, command, "--help")
        assert answer.returncode == 0, f"splitinfer {command} --help failed:\n{answer.stderr}"
        assert answer.stdout.startswith(f"usage: splitinfer {command}"), answer.stdout


def health_status(address: str) -> str:
    """The cloud's health as a probe sees it: SERVING, NOT_SERVING, or UNAVAILABLE while nothing answers."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


@pytest.fixture
def installed_cloud(wheel_venv: WheelVenv, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """`splitinfer cloud` from the wheel on a free loopback port with the real Yolo-Fastest weights."""
    weights = shared_path("models", "yolo-fastest-1.1")
    port_file, log = tmp_path / "cloud.port", tmp_path / "cloud.log"
    command = [str(wheel_venv.splitinfer), "cloud", "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
               "--metrics-port", "-1", "--weights", str(weights), "--drain-seconds", "5", "--log-level", "INFO",
               *wheel_venv.plaintext("cloud")]
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, text=True, cwd=wheel_venv.workdir,
                                   env=wheel_venv.env)
    try:
        deadline = time.monotonic() + 300
        while not port_file.exists() or not port_file.read_text().strip():
            assert process.poll() is None, f"the cloud exited with {process.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the cloud wrote no port file within 300 s:\n{log.read_text()}"
            time.sleep(0.1)
        yield process, f"127.0.0.1:{int(port_file.read_text())}", log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.mark.slow
def test_the_installed_cloud_serves_one_edge_frame_and_stops_on_sigterm(wheel_venv: WheelVenv, installed_cloud) -> None:
    process, address, log = installed_cloud
    video = shared_path("video", "one-by-one-person-detection.mp4")
    weights = shared_path("models", "yolo-fastest-1.1")
    assert health_status(address) == "SERVING"
    edge = wheel_venv.run(wheel_venv.splitinfer, "edge", "--source", video, "--frames", "1", "--cloud", address,
                          "--stream-id", "wheel-cam", "--weights", weights, "--log-level", "WARNING",
                          *wheel_venv.plaintext("edge"), timeout=300)
    assert edge.returncode == 0, f"splitinfer edge failed:\n{edge.stderr}"
    (line,) = edge.stdout.splitlines()
    result = json.loads(line)
    assert (result["stream_id"], result["frame_id"]) == ("wheel-cam", "0")  # protobuf's JSON: 64-bit ids are strings
    assert "error" not in result and int(result["payload_bytes"]) > 0
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()


@pytest.mark.slow
def test_mypy_passes_on_the_installed_package(wheel_venv: WheelVenv) -> None:
    pytest.importorskip("mypy", reason="mypy is a dev dependency: pip install -c constraints.txt -e '.[dev]'")
    check = wheel_venv.run(wheel_venv.python, "-m", "mypy", "--config-file", REPO / "pyproject.toml",
                           "--cache-dir", wheel_venv.workdir / ".mypy_cache", "-p", "splitinfer", timeout=600)
    assert check.returncode == 0, f"mypy found errors in the installed package:\n{check.stdout}\n{check.stderr}"
    assert "Success" in check.stdout
