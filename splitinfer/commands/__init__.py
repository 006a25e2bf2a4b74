"""Subcommands of the `splitinfer` console script, one module each (see splitinfer.cli)."""
