"""`splitinfer config`: print every setting (flag, SPLITINFER_* variable, default) as a Markdown table."""

from __future__ import annotations

import argparse

NAME = "config"
HELP = "List every flag and its SPLITINFER_* environment variable."
OPTIONS: list = []


def run(args: argparse.Namespace) -> int:
    from splitinfer.cli import all_options
    from splitinfer.settings import describe

    print(describe(all_options()))
    return 0
