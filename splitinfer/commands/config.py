"""`splitinfer config`: print every setting (flag, SPLITINFER_* variable, default) as a Markdown table."""

from __future__ import annotations

import argparse

NAME = "config"
HELP = "List every flag and its SPLITINFER_* environment variable."
OPTIONS: list = []


def run(args: argparse.Namespace) -> int:
    from splitinfer.cli import _commands
    from splitinfer.settings import describe

    print(describe({f"splitinfer {m.NAME}": m.OPTIONS for m in _commands() if m.OPTIONS}))
    return 0
