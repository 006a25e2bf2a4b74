"""The whole model as one call, for the partitions that run it in one place (pixels: cloud; detections: edge).

The one place that runs the unsplit model, so that another runtime can take it over later. It is the cut at
the model's input: a Split whose head is nothing and whose tail is the whole network, so the cloud batches
pixels frames as it batches any cut.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from splitinfer.dnn.preprocess import PreprocessInfo
from splitinfer.dnn.split import Split, TensorSpec

# The cut names of the two ends of the model (DESIGN.md: "input, layer k, output").
INPUT_CUT = "input"
OUTPUT_CUT = "output"
INPUT_TENSOR = "input"


def run_whole(model: Any, x: torch.Tensor) -> Any:
    """The unsplit network on a batch of network inputs (on the model's device): its raw outputs."""
    return model(x.to(next(model.parameters()).device))


def input_split(model: Any) -> Split:
    """The model cut before its first layer: tail(tensors) runs the whole network on tensors["input"]."""
    height, width = model.input_size
    # signed: a normalised input (ImageNet mean and std) has negative values.
    return Split(INPUT_CUT, [TensorSpec(INPUT_TENSOR, (3, height, width), signed=True)],
                 head=lambda x: {INPUT_TENSOR: x}, tail=lambda tensors: run_whole(model, tensors[INPUT_TENSOR]))


def network_input(model: Any, image_bgr: np.ndarray, source_width: int, source_height: int
                  ) -> tuple[np.ndarray, PreprocessInfo]:
    """The network input of a picture that stands for a source image of another size (a resized copy), and the
    info that maps boxes back to the source: the picture's own mapping, scaled by source / picture size."""
    x, info = model.preprocess(image_bgr)
    height, width = image_bgr.shape[:2]
    if (width, height) != (source_width, source_height):
        info = PreprocessInfo(source_height, source_width, info.scale_x * width / source_width,
                              info.scale_y * height / source_height, info.pad_x, info.pad_y)
    return x.numpy(), info


def detect(model: Any, image_bgr: np.ndarray) -> tuple[list, dict[str, float]]:
    """Run the whole model on one BGR image: its detections (or classes) in source pixels, and the stage times
    (preprocess; head: the network and its postprocess, all that runs on the edge after preprocessing)."""
    started = time.perf_counter()
    x, info = model.preprocess(image_bgr)
    preprocessed = time.perf_counter()
    found = model.postprocess(run_whole(model, x), info)
    return list(found), {"preprocess": preprocessed - started, "head": time.perf_counter() - preprocessed}
