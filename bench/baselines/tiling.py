"""Tile the channels of a (C, H, W) tensor into one monochrome frame over its clip range, and back.

The conventional anchor of MPEG FCM / CompressAI-Vision: channels side by side in a grid, values
mapped linearly from [clip_min, clip_max] to the 0..2^bits-1 sample range of a video frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_ALIGN = 8  # x265's smallest coding unit; frames are padded to a multiple of it


@dataclass(frozen=True)
class TileLayout:
    """Where each channel lies in the frame: a grid of `rows` x `cols` tiles of `height` x `width`."""

    channels: int
    height: int
    width: int
    rows: int
    cols: int

    @classmethod
    def for_shape(cls, channels: int, height: int, width: int) -> TileLayout:
        cols = math.ceil(math.sqrt(channels))
        return cls(channels, height, width, math.ceil(channels / cols), cols)

    @property
    def frame_height(self) -> int:
        return -(-self.rows * self.height // _ALIGN) * _ALIGN

    @property
    def frame_width(self) -> int:
        return -(-self.cols * self.width // _ALIGN) * _ALIGN


def tile(tensor: np.ndarray, clip_min: float, clip_max: float, bits: int) -> tuple[np.ndarray, TileLayout]:
    """(C, H, W) floats -> (frame_height, frame_width) uint16 samples; padding repeats the edge."""
    channels, height, width = tensor.shape
    layout = TileLayout.for_shape(channels, height, width)
    peak = (1 << bits) - 1
    samples = np.rint((np.clip(tensor, clip_min, clip_max) - clip_min) * (peak / (clip_max - clip_min)))
    grid = np.zeros((layout.rows * layout.cols, height, width), dtype=np.uint16)
    grid[:channels] = samples.astype(np.uint16)
    frame = grid.reshape(layout.rows, layout.cols, height, width).transpose(0, 2, 1, 3)
    frame = frame.reshape(layout.rows * height, layout.cols * width)
    pad = ((0, layout.frame_height - frame.shape[0]), (0, layout.frame_width - frame.shape[1]))
    return np.pad(frame, pad, mode="edge"), layout


def untile(frame: np.ndarray, layout: TileLayout, clip_min: float, clip_max: float, bits: int) -> np.ndarray:
    """The inverse of `tile`: (C, H, W) float32 values from decoded samples."""
    peak = (1 << bits) - 1
    rows, cols, height, width = layout.rows, layout.cols, layout.height, layout.width
    core = frame[: rows * height, : cols * width].reshape(rows, height, cols, width).transpose(0, 2, 1, 3)
    core = core.reshape(rows * cols, height, width)[: layout.channels]
    return (core.astype(np.float32) * np.float32((clip_max - clip_min) / peak) + np.float32(clip_min)).astype(np.float32)
