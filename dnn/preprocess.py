"""Turn a BGR image (OpenCV's layout) into the input tensor each model expects, and remember how to map back.

Yolo-Fastest: RGB, plain resize to the network size, /255. YOLOv3 family: Darknet letterbox (aspect kept,
grey 0.5 padding). ImageNet classifiers: resize the shorter side, centre crop, normalise.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from splitinfer.dnn.errors import ModelError


@dataclass(frozen=True)
class PreprocessInfo:
    """Maps network-input pixels back to source pixels: x_src = (x_net - pad_x) / scale_x."""

    source_height: int
    source_width: int
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy boxes in network pixels -> source pixels, clipped to the image."""
        out = np.empty_like(boxes, dtype=np.float64)
        out[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_y) / self.scale_y
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.source_width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.source_height)
        return out


def check_image(image_bgr: np.ndarray) -> np.ndarray:
    """Accept an (H, W, 3) uint8 BGR image (or (H, W) grey, converted); anything else is a ModelError."""
    if not isinstance(image_bgr, np.ndarray):
        raise ModelError(f"expected an image as a numpy array (H, W, 3) uint8 BGR, got {type(image_bgr).__name__}.")
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8 or min(image_bgr.shape[:2]) < 1:
        raise ModelError(
            f"expected an (H, W, 3) uint8 BGR image as cv2.imread returns it, got shape {image_bgr.shape} "
            f"dtype {image_bgr.dtype}."
        )
    return image_bgr


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).unsqueeze(0)


@dataclass(frozen=True)
class ResizePreprocess:
    """Plain resize to (height, width), RGB, /255 (Yolo-Fastest)."""

    height: int
    width: int

    def __call__(self, image_bgr: np.ndarray) -> tuple[torch.Tensor, PreprocessInfo]:
        image = check_image(image_bgr)
        h, w = image.shape[:2]
        resized = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        return _to_tensor(rgb), PreprocessInfo(h, w, self.width / w, self.height / h)


@dataclass(frozen=True)
class LetterboxPreprocess:
    """Darknet letterbox: resize keeping aspect ratio, centre on a 0.5-grey canvas, RGB, /255 (YOLOv3)."""

    height: int
    width: int

    def __call__(self, image_bgr: np.ndarray) -> tuple[torch.Tensor, PreprocessInfo]:
        image = check_image(image_bgr)
        h, w = image.shape[:2]
        scale = min(self.width / w, self.height / h)
        new_w, new_h = max(1, int(w * scale)), max(1, int(h * scale))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((self.height, self.width, 3), 0.5, dtype=np.float32)
        pad_x, pad_y = (self.width - new_w) // 2, (self.height - new_h) // 2
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = (
            cv2.cvtColor(resized, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        )
        return _to_tensor(canvas), PreprocessInfo(h, w, new_w / w, new_h / h, pad_x, pad_y)


@dataclass(frozen=True)
class CenterCropPreprocess:
    """Resize the shorter side to `resize`, centre crop `crop`, RGB, (x/255 - mean) / std (ImageNet models)."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image_bgr: np.ndarray) -> tuple[torch.Tensor, PreprocessInfo]:
        image = check_image(image_bgr)
        h, w = image.shape[:2]
        scale = self.resize / min(h, w)
        new_w, new_h = max(self.crop, round(w * scale)), max(self.crop, round(h * scale))
        top, left = (new_h - self.crop) // 2, (new_w - self.crop) // 2
        # Crop the source window the centre crop covers, then resize only it: resizing the whole image first
        # grows with the aspect ratio (a 1x4000 image became 256x1024000 pixels, 1.7 GB).
        x0, x1 = max(0, math.floor(left / scale)), min(w, math.ceil((left + self.crop) / scale))
        y0, y1 = max(0, math.floor(top / scale)), min(h, math.ceil((top + self.crop) / scale))
        window = image[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
        crop = cv2.resize(window, (self.crop, self.crop), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        rgb: np.ndarray = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        rgb = (rgb - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return _to_tensor(rgb), PreprocessInfo(h, w, scale, scale, -left, -top)
