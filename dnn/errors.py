"""Errors of the split models: bad cfg, weights, model name, cut or input.

    ModelError                 (splitinfer.errors.SplitInferError, ValueError)
    ├── CfgError               a Darknet cfg file is malformed (names the file and line)
    ├── WeightsError           a weights file is missing, the wrong size or fails its checksum
    │   └── WeightsUnavailableError   no local copy and the download failed (names file, URL, flag)
    ├── MissingDependencyError an optional package is not installed (says which pip extra to install)
    ├── InferenceRuntimeError  a --runtime cannot run the model here (precision, or an export that disagrees)
    └── ImageDecodeError       an image or video frame could not be read
"""

from __future__ import annotations

from splitinfer.errors import SplitInferError


class ModelError(SplitInferError, ValueError):
    """A model, its cfg, weights, cut or input is invalid: the message says what to do."""


class CfgError(ModelError):
    """A Darknet cfg file is malformed."""


class WeightsError(ModelError):
    """A weights file is missing, has the wrong size, or fails its checksum."""


class WeightsUnavailableError(WeightsError):
    """The weights are not on this machine and could not be downloaded."""


class MissingDependencyError(ModelError, ImportError):
    """An optional package that this model needs is not installed."""


class InferenceRuntimeError(ModelError):
    """A runtime (--runtime) cannot run this model here: unknown, an unsupported precision, or a wrong export."""


class ImageDecodeError(ModelError):
    """An image file or video frame could not be decoded."""
