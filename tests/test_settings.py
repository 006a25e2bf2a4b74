"""Settings: flags with SPLITINFER_* variables behind them; a bad value is reported for the command that reads it."""

from __future__ import annotations

import argparse

import pytest

from splitinfer.cli import main
from splitinfer.errors import ConfigError
from splitinfer.settings import Option, add_options, raise_config_errors

OPTIONS = [
    Option("port", "a port", int, 50051),
    Option("verbose", "talk more", flag=True, default=False),
    Option("mode", "a mode", str, "live", ("live", "file")),
]


def parse(environ: dict[str, str], argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_options(parser, OPTIONS, environ=environ)
    args = parser.parse_args(argv or [])
    raise_config_errors(args)
    return args


def test_environment_sets_defaults_and_flags_override_them() -> None:
    args = parse({"SPLITINFER_PORT": "7", "SPLITINFER_VERBOSE": "yes", "SPLITINFER_MODE": "file"})
    assert (args.port, args.verbose, args.mode) == (7, True, "file")
    assert parse({"SPLITINFER_PORT": "7"}, ["--port", "9"]).port == 9
    assert parse({}).port == 50051


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"SPLITINFER_PORT": "seven"}, "SPLITINFER_PORT='seven'"),
        ({"SPLITINFER_VERBOSE": "maybe"}, "not a boolean"),
        ({"SPLITINFER_MODE": "batch"}, "not one of live, file"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_is_allowed(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        parse(environ)


def test_a_bad_variable_of_one_command_does_not_break_the_others(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SPLITINFER_PORT", "not-a-port")  # read by `splitinfer cloud` only
    assert main(["config"]) == 0
    assert main(["cloud"]) == 2
    assert "SPLITINFER_PORT='not-a-port'" in capsys.readouterr().err


def test_one_coder_variable_suits_every_command_that_reads_it(monkeypatch) -> None:
    from splitinfer.cli import build_parser

    monkeypatch.setenv("SPLITINFER_CODER", "temporal-contexts")
    parser = build_parser()
    for argv in (["edge"], ["calibrate"], ["eval", "DATA"], ["roundtrip"]):
        args = parser.parse_args(argv)
        raise_config_errors(args)
        assert args.coder == "temporal-contexts"
    monkeypatch.setenv("SPLITINFER_CODER", "zip")
    with pytest.raises(ConfigError, match="unknown coder 'zip'"):
        raise_config_errors(build_parser().parse_args(["calibrate"]))


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path) -> None:
    """`splitinfer ... | head`: the closed pipe ends the command with 141 (SIGPIPE), no traceback."""
    import subprocess
    import sys

    command = subprocess.Popen([sys.executable, "-m", "splitinfer.cli", "config"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=tmp_path)
    command.stdout.close()  # the reader is gone before the command writes its first line
    _, err = command.communicate(timeout=60)
    assert command.returncode == 141 and b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
