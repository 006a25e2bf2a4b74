"""Split models: Darknet and torchvision/timm networks cut at a layer into head (edge) and tail (cloud).

    model = load_model("yolo-fastest-1.1-xl", weights="path/to/folder")
    x, info = model.preprocess(image_bgr)
    split = model.split(model.default_cut)
    detections = model.postprocess(split.tail(split.head(x)), info)
"""

from splitinfer.dnn.errors import (
    CfgError,
    ImageDecodeError,
    MissingDependencyError,
    ModelError,
    WeightsError,
    WeightsUnavailableError,
)
from splitinfer.dnn.model import SplitModel
from splitinfer.dnn.preprocess import PreprocessInfo
from splitinfer.dnn.registry import ModelSpec, get_spec, list_models, load_model
from splitinfer.dnn.results import ClassScore, Detection
from splitinfer.dnn.split import Split, TensorSpec

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
