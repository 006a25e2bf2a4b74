"""The README's two commands are what CI runs and what a newcomer types: keep them and .ci/run in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


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
