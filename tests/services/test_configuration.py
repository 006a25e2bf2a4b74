"""One documented list of settings: every flag has a SPLITINFER_* variable, and docs/CONFIGURATION.md is current."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from splitinfer.cli import _commands, all_options, build_parser
from splitinfer.errors import ConfigError
from splitinfer.settings import add_options, describe, raise_config_errors

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md"
SERVICE_COMMANDS = ("cloud", "edge", "watch", "demo")


def test_configuration_doc_lists_every_option_as_splitinfer_config_prints_it() -> None:
    table = describe(all_options())
    assert table in DOC.read_text(), (
        "docs/CONFIGURATION.md is stale: replace its table with the output of `python -m splitinfer.cli config` "
        "(the file says how)"
    )


def test_the_cloud_options_that_deploy_uses_exist() -> None:
    cloud = next(m for m in _commands() if m.NAME == "cloud")
    envs = {option.env for option in cloud.OPTIONS}
    assert {"SPLITINFER_PORT", "SPLITINFER_METRICS_PORT", "SPLITINFER_DRAIN_SECONDS", "SPLITINFER_MODEL",
            "SPLITINFER_WEIGHTS", "SPLITINFER_MAX_STREAMS"} <= envs


@pytest.mark.parametrize("command", SERVICE_COMMANDS)
def test_environment_variables_set_the_defaults_of_service_commands(command) -> None:
    module = next(m for m in _commands() if m.NAME == command)
    int_option = next((o for o in module.OPTIONS if o.cast is int), None)
    if int_option is None:
        pytest.skip(f"{command} has no integer option")
    parser = argparse.ArgumentParser()
    add_options(parser, module.OPTIONS, environ={int_option.env: "7"})
    assert getattr(parser.parse_args([]), int_option.dest) == 7
    parser = argparse.ArgumentParser()
    add_options(parser, module.OPTIONS, environ={int_option.env: "seven"})
    with pytest.raises(ConfigError, match=int_option.env):
        raise_config_errors(parser.parse_args([]))


def test_service_commands_parse_their_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["cloud", "--port", "0", "--metrics-port", "-1", "--drain-seconds", "5"])
    assert (args.port, args.metrics_port, args.drain_seconds) == (0, -1, 5.0)
    args = parser.parse_args(["edge", "--source", "rtsp://cam/1", "--cloud", "cloud:50051", "--mode", "live"])
    assert (args.source, args.cloud, args.mode, args.window) == ("rtsp://cam/1", "cloud:50051", "live", 4)
    assert parser.parse_args(["demo"]).frames == 100
