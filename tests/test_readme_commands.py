"""The README's commands are what a newcomer types: every command in its fenced `sh` blocks runs here as written,
and its two commands are what CI runs.

What is substituted, and why: `../shared/data` becomes the sample data folder (wherever the tests find it); a
camera (`--source 0`) becomes the sample video, as does a source that cannot exist here (an RTSP camera on
`camera.local`); demos and edges stream a few frames instead of 100; ports become free ones (the commands also
run while other clouds serve on this machine); `cloud.example.com` is the cloud the block before started; a
TLS block gets a throwaway CA, certificate and access file under the names it uses. A command needing something
absent (a webcam for `--source 0` where the demo is the point, kubectl) skips with the reason. A new kind of
command in the README fails here until it has a runner.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from splitinfer.sample_data import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
SPLITINFER = f"{shlex.quote(sys.executable)} -m splitinfer.cli"
FRAMES = "5"


def fenced_blocks(language: str = "sh", section: str | None = None) -> list[list[str]]:
    """The lines of every ```LANGUAGE block of the README (of one `## ` section when given)."""
    text = (ROOT / "README.md").read_text()
    if section is not None:
        text = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"(?ms)^```{language}\n(.*?)^```", text)
    return [[line.strip() for line in block.splitlines() if line.strip()] for block in blocks]


def readme_commands() -> list[str]:
    return [line for block in fenced_blocks(section="The two commands") for line in block]


def test_readme_has_a_main_job_and_a_test_command():
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert commands[0].endswith("splitinfer demo") and commands[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_readme_installs_with_the_committed_constraints():
    for command in readme_commands():
        assert "-c constraints.txt" in command, command
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^\s;]+", pin) for pin in pins), "constraints.txt holds exact pins only"
    names = {pin.split("==")[0].lower().replace("_", "-") for pin in pins}
    for needed in ("torch", "numpy", "grpcio", "protobuf", "pytest", "numba"):
        assert needed in names, f"{needed} is not pinned in constraints.txt"


def test_the_readme_commands_are_plain_shell_lines():
    """One command per line, no prompts or comments to copy by mistake."""
    for block in fenced_blocks():
        for line in block:
            assert not line.startswith(("$", "#", ">")) and "  #" not in line, line


# ------------------------------------------------------------------------------------------ running them


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Session:
    """What the README's commands have started so far: the folder they run in and the clouds still serving."""

    folder: Path
    clouds: list[tuple[subprocess.Popen, str]] = field(default_factory=list)
    watchers: list[tuple[subprocess.Popen, Path]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    def shell(self, command: str, *, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run(["bash", "-c", command], cwd=self.folder, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stderr[-3000:]}"
        return done

    def start_cloud(self, command: str) -> str:
        """Start a `splitinfer cloud` line in the background on free ports; returns its HOST:PORT once it serves."""
        port_file = self.folder / f"cloud-{len(self.clouds)}.port"
        log = open(self.folder / f"cloud-{len(self.clouds)}.log", "w")  # noqa: SIM115 - the process writes it
        command = command.replace("--health-port 50052", f"--health-port {_free_port()}")
        process = subprocess.Popen(["bash", "-c", f"exec {command} --port 0 --port-file {port_file} --metrics-port 0"],
                                   cwd=self.folder, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 300
        while not port_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, (
                f"{command} did not serve:\n{(self.folder / f'cloud-{len(self.clouds)}.log').read_text()[-3000:]}")
            time.sleep(0.2)
        address = f"localhost:{int(port_file.read_text())}"
        self.clouds.append((process, address))
        return address

    def close(self) -> None:
        for process, _ in [*self.clouds, *((w, None) for w, _ in self.watchers)]:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(30)


def _substitute(command: str) -> str:
    """The command as this test runs it: our interpreter, the sample data wherever it is."""
    command = re.sub(r"^splitinfer ", SPLITINFER + " ", command)
    return command.replace("../shared/data", shlex.quote(str(shared_data_dir())))


def _sample_video() -> str:
    return shlex.quote(str(shared_data_dir() / "video" / "one-by-one-person-detection.mp4"))


def _run_demo(session: Session, command: str) -> None:
    if "--source 0" in command and not Path("/dev/video0").exists():
        session.skipped.append(f"{command} (no webcam here)")
        return
    if "rtsp://camera.local" in command:  # a camera that cannot exist here: the sample video, as a file
        command = re.sub(r"--source \S+", f"--source {_sample_video()}", command)
    command = _substitute(command)
    if "--frames" not in command:
        command += f" --frames {FRAMES}"
    done = session.shell(command)
    assert "frames answered" in done.stdout and " (0 with errors)" in done.stdout, done.stdout
    if "--preview" in command:
        assert "live page: http://127.0.0.1:" in done.stdout
    if "--annotate" in command:
        assert (session.folder / command.split("--annotate ", 1)[1].split()[0]).stat().st_size > 0
    session.ran.append(command)


def _edge_source(command: str) -> str:
    """An edge line that names a camera streams the sample video instead, a few frames of it."""
    if "--source 0" in command:
        command = command.replace("--source 0", f"--source {_sample_video()}")
    if "--frames" in command:
        command = re.sub(r"--frames \d+", f"--frames {FRAMES}", command)
    return command + ("" if "--frames" in command else f" --frames {FRAMES}")


def _run_edge(session: Session, command: str) -> None:
    assert session.clouds, f"the README runs an edge before any cloud: {command}"
    address = session.clouds[-1][1]
    command = _edge_source(command).replace("cloud.example.com:50051", address)
    if "--cloud" not in command:
        command = command.replace("splitinfer edge", f"splitinfer edge --cloud {address}", 1)
    command = command.replace("--preview-port 8080", "--preview-port 0")
    redirect = ""
    if " > " in command:  # the shell redirection stays at the end
        command, redirect = command.split(" > ", 1)
        redirect = f" > {redirect}"
    session.shell(_substitute(command) + redirect)
    if redirect:
        results = (session.folder / redirect.split()[-1]).read_text().splitlines()
        assert len(results) == int(FRAMES), results
    session.ran.append(command)


def _start_watch(session: Session, command: str) -> None:
    assert session.clouds, f"the README runs watch before any cloud: {command}"
    output = session.folder / f"watch-{len(session.watchers)}.txt"
    # As on a terminal (the README shows that form); the test's stdout is a file.
    full = f"exec {_substitute(command)} --cloud {session.clouds[-1][1]} --format table"
    with open(output, "w") as out:
        process = subprocess.Popen(["bash", "-c", full], cwd=session.folder, stdout=out, stderr=subprocess.STDOUT)
    session.watchers.append((process, output))
    session.ran.append(command)


def _check_watchers(session: Session) -> None:
    """The edges have run: each watch printed one readable line per result of its stream."""
    for process, output in session.watchers:
        deadline = time.monotonic() + 60
        while output.read_text().count(" #") < int(FRAMES) and time.monotonic() < deadline:
            time.sleep(0.2)
        lines = [line for line in output.read_text().splitlines() if re.match(r"\d\d:\d\d:\d\d \S+ #\d+ ", line)]
        assert len(lines) >= int(FRAMES), output.read_text()
        assert "subscribed to" in output.read_text()
        process.terminate()
        process.wait(30)
    session.watchers.clear()


def _run_token(session: Session, command: str) -> None:
    done = session.shell(_substitute(command))
    digest = re.search(r'tokens_sha256: \["([0-9a-f]{64})"\]', done.stdout)
    assert digest, done.stdout
    (session.folder / "access.yaml").write_text(
        f'identities:\n  - name: site-a-edge\n    tokens_sha256: ["{digest[1]}"]\n    publish: ["site-a/*"]\n'
        '    subscribe: ["site-a/*"]\n')
    session.ran.append(command)


def _start_tls_cloud(session: Session, command: str) -> None:
    from tests.services.certificates import Authority

    authority = Authority(session.folder, "readme")
    issued = authority.issue("cloud.example.com", server=True)
    shutil.copy(authority.ca, session.folder / "ca.crt")
    shutil.copy(issued.cert, session.folder / "tls.crt")
    shutil.copy(issued.key, session.folder / "tls.key")
    assert (session.folder / "access.yaml").exists(), "the README starts the TLS cloud before making a token"
    session.start_cloud(_substitute(command))
    session.ran.append(command)


def _kubectl(session: Session, command: str) -> None:
    if shutil.which("kubectl") is None:
        session.skipped.append(f"{command} (no kubectl here)")
        return
    overlay = command.split("-k ", 1)[1].split()[0]
    done = subprocess.run(["kubectl", "kustomize", overlay], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "kind: Deployment" in done.stdout, done.stderr  # no cluster here: render it
    session.ran.append(command)


def _dispatch(session: Session, command: str) -> None:
    if command.startswith("python3 -m venv"):
        step = command.rsplit("&& ", 1)[1]
        if step == "splitinfer demo":
            _run_demo(session, step)  # the install is this test's own environment
        else:
            assert step == "python -m pytest"  # this suite; .ci/run runs the whole line (test above)
    elif command.startswith("splitinfer demo"):
        _run_demo(session, command)
    elif command.startswith("splitinfer cloud") and "--tls-cert" in command:
        _start_tls_cloud(session, command)
    elif command.startswith("splitinfer cloud"):
        session.start_cloud(_substitute(command))
        session.ran.append(command)
    elif command.startswith("splitinfer watch"):
        _start_watch(session, command)
    elif command.startswith("splitinfer edge"):
        _run_edge(session, command)
        _check_watchers(session)
    elif command.startswith("splitinfer token"):
        _run_token(session, command)
    elif command.startswith("kubectl apply -k"):
        _kubectl(session, command)
    else:
        pytest.fail(f"no runner for the README command {command!r}: add one to tests/test_readme_commands.py")


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path) -> None:
    if not (shared_data_dir() / "video").is_dir():
        pytest.skip(f"{shared_data_dir()} is absent: the README's commands use the sample data")
    session = Session(tmp_path)
    try:
        for block in fenced_blocks():
            for command in block:
                _dispatch(session, command)
    finally:
        session.close()
    assert session.ran, "no README command ran"
    if session.skipped:
        print("skipped:", *session.skipped, sep="\n  ")


def test_every_readme_command_has_a_runner() -> None:
    """The cheap half of the test above, for the fast suite: every command is one the runner knows."""
    known = ("python3 -m venv", "splitinfer demo", "splitinfer cloud", "splitinfer watch", "splitinfer edge",
             "splitinfer token", "kubectl apply -k")
    commands = [line for block in fenced_blocks() for line in block]
    assert commands and all(c.startswith(known) for c in commands), [c for c in commands if not c.startswith(known)]
    assert os.path.exists(ROOT / "docs" / "live-page.png")  # the README's picture
