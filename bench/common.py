"""Helpers the bench scripts share (one module, imported by the scripts beside it; it imports none of them):
where the data is, the network input as a picture and back, and the calibration histogram of a cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splitinfer.sample_data import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
DATA = shared_data_dir()


def input_to_bgr(model, x) -> np.ndarray:
    """The (1, 3, H, W) network input as the BGR uint8 picture the network sees (undo /255 and mean/std)."""
    import cv2

    rgb = x[0].numpy().transpose(1, 2, 0)
    pre = model._preprocessor
    if hasattr(pre, "mean"):
        rgb = rgb * np.asarray(pre.std, np.float32) + np.asarray(pre.mean, np.float32)
    return cv2.cvtColor(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def bgr_to_input(model, bgr: np.ndarray):
    """The inverse of input_to_bgr: a picture at the network size back to a (1, 3, H, W) input."""
    import cv2
    import torch

    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    pre = model._preprocessor
    if hasattr(pre, "mean"):
        rgb = (rgb - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).unsqueeze(0)


def calibration_histogram(model, cut: str, max_images: int | None = None):
    """The value histogram of the tensor at `cut` over coco-mini/calib2017 (for every model)."""
    from splitinfer.codec.clip_range import ValueHistogram
    from splitinfer.dnn.calibration import collect_calibration

    folder = DATA / "coco-mini" / "calib2017"
    calibration = collect_calibration(model, cut, folder, max_images=max_images, keep_images=0, progress=False)
    (sample,) = calibration.samples.values()
    return ValueHistogram.of(sample.values), sample
