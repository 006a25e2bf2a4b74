"""The `splitinfer` console script: one subcommand per module in splitinfer.commands.

A command module defines NAME, HELP, OPTIONS (a list of settings.Option), optionally
`configure(parser)` for positional arguments, and `run(args) -> int`. Modules import heavy
libraries (torch, grpc) inside `run`, so `splitinfer --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from splitinfer import __version__
from splitinfer.errors import SplitInferError
from splitinfer.logs import LOG_OPTIONS, NativeStderr, configure_logging, say
from splitinfer.settings import Option, add_options, raise_config_errors

DESCRIPTION = ("Split DNN inference for live video: an edge runs the first layers of a detector on camera frames and "
               "streams compressed features to a cloud that runs the rest and streams detections back. "
               "Try `splitinfer demo`; `splitinfer COMMAND --help` for each command.")
COMMAND_MODULES = (
    "splitinfer.commands.roundtrip",
    "splitinfer.commands.calibrate",
    "splitinfer.commands.calibrate_partitions",
    "splitinfer.commands.eval",
    "splitinfer.commands.config",
    "splitinfer.commands.cloud",
    "splitinfer.commands.edge",
    "splitinfer.commands.watch",
    "splitinfer.commands.token",
    "splitinfer.commands.bus_key",
    "splitinfer.commands.bus_user",
    "splitinfer.commands.demo",
)


def _commands() -> list[ModuleType]:
    return [importlib.import_module(name) for name in COMMAND_MODULES]


def command_options(module: ModuleType) -> list[Option]:
    """A command's own options plus --log-level/--log-format, which every command has."""
    own = list(module.OPTIONS)
    names = {option.name for option in own}
    level = getattr(module, "DEFAULT_LOG_LEVEL", None)
    extra = [dataclasses.replace(option, default=level) if option.name == "log-level" and level else option
             for option in LOG_OPTIONS if option.name not in names]
    return own + extra


def all_options() -> dict[str, list[Option]]:
    """Every command's options, as `splitinfer config` prints them (docs/CONFIGURATION.md)."""
    return {f"splitinfer {m.NAME}": command_options(m) for m in _commands()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitinfer", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"splitinfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _commands():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        if hasattr(module, "configure"):
            module.configure(command)
        add_options(command, command_options(module))
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; errors we raise on purpose print one line (a JSON record under --log-format json), not a
    traceback."""
    log_format = "text"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        log_format = args.log_format
        raise_config_errors(args)
        handler = configure_logging(args.log_level, args.log_format)
        try:
            with NativeStderr():
                return int(args.run(args) or 0)
        finally:
            logging.getLogger().removeHandler(handler)
            logging.captureWarnings(False)
    except SplitInferError as exc:
        say(f"splitinfer: error: {exc}", stream=sys.stderr, level="ERROR", as_json=log_format == "json")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read our output went away (`splitinfer edge ... | head`): stop quietly, as Unix tools do,
        # and keep the interpreter from reporting the failed flush of stdout at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 128 + signal.SIGPIPE


def console() -> None:
    """The console script: main(), and on a failure an exit that skips the interpreter's teardown.

    With torch loaded, that teardown takes seconds (more on a busy machine) after the error has been said; the
    commands close their own files and servers before they return, so nothing is left for it to do.
    """
    code = main()
    if code != 0 and "torch" in sys.modules:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
