"""Checks the edge and the cloud share, run before torch loads: the model name, the --weights path and the cut.

They read the model registry (splitinfer.dnn.specs) and the model's cfg only, so a mistake costs a second.
"""

from __future__ import annotations

from pathlib import Path

from splitinfer.errors import ConfigError


def check_weights_path(weights: str | None) -> None:
    """A --weights path that is given must exist."""
    if weights and not Path(weights).exists():
        raise ConfigError(f"--weights {weights} does not exist: pass the weights file or the folder that holds it "
                          "(or leave --weights unset to use $SPLITINFER_WEIGHTS_DIR, the cache, the sample data or a download).")


def check_model(model: str, weights: str | None, cut: str | None) -> None:
    """The model is registered, its weights file is where --weights says, and the cut exists: read from the
    registry and the model's cfg, without importing torch or loading weights."""
    from splitinfer.dnn.errors import ModelError
    from splitinfer.dnn.specs import check_cut, get_spec
    from splitinfer.dnn.weights import RemoteFile, resolve_file

    try:
        spec = get_spec(model)
    except ModelError as exc:
        raise ConfigError(f"--model: {exc}") from exc
    if weights and isinstance(spec.weights, RemoteFile):
        try:
            resolve_file(spec.weights, weights, download=False)
        except ModelError as exc:
            raise ConfigError(f"--weights: {exc}") from exc
    if cut is None:
        return
    try:
        check_cut(spec, cut, weights)
    except ModelError as exc:
        raise ConfigError(f"--cut: {exc}") from exc
