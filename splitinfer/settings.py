"""Command-line options with SPLITINFER_* environment variables behind them: the one list of all settings.

Every option is declared once as an `Option`; `add_options` puts it on an argparse parser with the
environment variable as its default, so `--port 50051` and `SPLITINFER_PORT=50051` mean the same.
`splitinfer config` prints the full list (it is also in docs/CONFIGURATION.md).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from splitinfer.errors import ConfigError

ENV_PREFIX = "SPLITINFER_"
# The model every command serves, streams or calibrates unless told otherwise (--model).
DEFAULT_MODEL = "yolo-fastest-1.1-xl"
# Frames between intra frames of a temporally coded stream (codec profiles, calibrate); kept here, not in the
# codec, so that the CLI names it without importing numba. 250 (x264's default key interval) since codec v3: on
# the selection videos it sends 2-41 % fewer bytes than 30 at no cost in detection changes (docs/RESULTS.md,
# "Codec v3, item 1"); a lost reference is recovered through intra_frame_requested, not by waiting for a period.
DEFAULT_INTRA_PERIOD = 250
# Frames between key frames of the pixels partition's H.264 stream (--partition pixels).
DEFAULT_KEY_INTERVAL = 30
# x264's presets, for --pixel-preset (partition pixels); here so that the CLI names them without importing PyAV.
PIXEL_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass(frozen=True)
class Option:
    """One setting: flag `--name`, environment variable SPLITINFER_NAME, a cast and a default."""

    name: str
    help: str
    cast: Callable[[str], Any] = str
    default: Any = None
    choices: tuple[str, ...] | None = None
    flag: bool = False  # a boolean switch (--name), true in the environment as 1/true/yes/on

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _from_env(option: Option, environ: Mapping[str, str]) -> Any:
    raw = environ.get(option.env)
    if raw is None:
        return option.default
    if option.flag:
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(f"{option.env}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off.")
    if option.choices is not None and raw not in option.choices:
        raise ConfigError(f"{option.env}={raw!r} is not one of {', '.join(option.choices)}.")
    try:
        return option.cast(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{option.env}={raw!r} is invalid for --{option.name}: {exc}") from exc


def add_options(
    parser: argparse.ArgumentParser,
    options: Iterable[Option],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Add each option as a flag whose default comes from its SPLITINFER_* variable."""
    environ = os.environ if environ is None else environ
    errors: list[ConfigError] = []
    for option in options:
        try:
            default = _from_env(option, environ)
        except ConfigError as exc:
            # Raised only if this command runs (see config_errors): a variable meant for another command
            # must not break every command of the CLI.
            errors.append(exc)
            default = option.default
        # argparse %-formats help strings: a literal % ("20-30 % of the bytes") must reach it as %%.
        if option.default is not None:
            shown = f"default {option.default!r}"
        else:  # "default None" would contradict a help text that says what unset means
            shown = "" if "default" in option.help.lower() else "unset by default"
        help_text = f"{option.help} [env {option.env}{'; ' + shown if shown else ''}]".replace("%", "%%")
        if option.flag:
            parser.add_argument(
                f"--{option.name}", dest=option.dest, action=argparse.BooleanOptionalAction,
                default=default, help=help_text,
            )
        else:
            parser.add_argument(
                f"--{option.name}", dest=option.dest, type=option.cast, default=default,
                choices=option.choices, help=help_text,
            )
    parser.set_defaults(config_errors=tuple(errors))


def raise_config_errors(args: argparse.Namespace) -> None:
    """Raise the first invalid SPLITINFER_* value found for the command that is about to run."""
    errors = getattr(args, "config_errors", ())
    if errors:
        raise errors[0]


def describe(groups: Mapping[str, Iterable[Option]]) -> str:
    """A Markdown table of every option, by command."""
    lines = ["| command | flag | environment variable | default | meaning |", "|---|---|---|---|---|"]
    for command, options in groups.items():
        for option in options:
            lines.append(
                f"| {command} | `--{option.name}` | `{option.env}` | `{option.default!r}` | {option.help} |"
            )
    return "\n".join(lines)
