"""Subcommands of the `splitinfer` console script, one module each (see splitinfer.cli)."""

from __future__ import annotations

from splitinfer.settings import Option

# Every command that loads a model finds its files the same way (splitinfer.dnn.weights.resolve_file).
WEIGHTS_OPTION = Option("weights", "Weights file or folder holding it (default: $SPLITINFER_WEIGHTS_DIR, then the "
                        "cache, then ../shared/data/models/* beside the checkout or $SPLITINFER_SHARED_DATA/models/*, "
                        "then a checksum-verified download).")


def coder_name(text: str) -> str:
    """Option cast for --coder: any spelling of a coder (or "auto"), checked now, kept as text.

    Every command reads it with splitinfer.codec.parse_coder, so one SPLITINFER_CODER suits them all.
    """
    from splitinfer.codec import CodecError, parse_coder

    try:
        parse_coder(text)
    except CodecError as exc:
        raise ValueError(str(exc)) from exc
    return text


def write_new_secret(path: str, text: str, flag: str) -> None:
    """Write a secret (token, password, private key) to a new file only its owner reads; never overwrite one."""
    import os

    from splitinfer.errors import ConfigError

    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror or exc} (it must not exist yet).") from exc
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
