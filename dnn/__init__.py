"""Split models: Darknet and torchvision/timm networks cut at a layer into head (edge) and tail (cloud).

    model = load_model("yolo-fastest-1.1-xl", weights="path/to/folder")
    x, info = model.preprocess(image_bgr)
    split = model.split(model.default_cut)
    detections = model.postprocess(split.tail(split.head(x)), info)
"""

from typing import TYPE_CHECKING

from splitinfer.dnn.errors import (
    CfgError,
    ImageDecodeError,
    MissingDependencyError,
    ModelError,
    WeightsError,
    WeightsUnavailableError,
)
from splitinfer.dnn.results import ClassScore, Detection
from splitinfer.dnn.specs import ModelSpec, get_spec, list_models

if TYPE_CHECKING:
    from splitinfer.dnn.model import SplitModel
    from splitinfer.dnn.preprocess import PreprocessInfo
    from splitinfer.dnn.registry import load_model
    from splitinfer.dnn.split import Split, TensorSpec

# The names that need torch load on first use, so that `splitinfer.dnn.specs` (model names, cuts, weights paths)
# answers a command's checks before torch is imported.
_LAZY = {
    "SplitModel": "splitinfer.dnn.model",
    "PreprocessInfo": "splitinfer.dnn.preprocess",
    "load_model": "splitinfer.dnn.registry",
    "Split": "splitinfer.dnn.split",
    "TensorSpec": "splitinfer.dnn.split",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'splitinfer.dnn' has no attribute {name!r}")

__all__ = [
    "CfgError",
    "ClassScore",
    "Detection",
    "ImageDecodeError",
    "MissingDependencyError",
    "ModelError",
    "ModelSpec",
    "PreprocessInfo",
    "Split",
    "SplitModel",
    "TensorSpec",
    "WeightsError",
    "WeightsUnavailableError",
    "get_spec",
    "list_models",
    "load_model",
]
