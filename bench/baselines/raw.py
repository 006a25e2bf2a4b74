"""Uncoded tensors: float16, and 8-bit uniform levels over the clip range (one byte per element)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RawResult:
    """The decoded tensor, the bytes sent and the encode/decode seconds."""

    tensor: np.ndarray
    nbytes: int
    encode_seconds: float
    decode_seconds: float


def float16_roundtrip(tensor: np.ndarray) -> RawResult:
    """Send the tensor as little-endian float16."""
    start = time.perf_counter()
    payload = np.asarray(tensor, dtype="<f2").tobytes()
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded = np.frombuffer(payload, dtype="<f2").astype(np.float32).reshape(tensor.shape)
    return RawResult(decoded, len(payload), encode_seconds, time.perf_counter() - start)


def uint8_roundtrip(tensor: np.ndarray, clip_min: float, clip_max: float) -> RawResult:
    """Send 256 uniform levels over [clip_min, clip_max] as one byte per element, no entropy coding."""
    scale = 255.0 / (clip_max - clip_min)
    start = time.perf_counter()
    payload = np.rint((np.clip(tensor, clip_min, clip_max) - clip_min) * scale).astype(np.uint8).tobytes()
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    levels = np.frombuffer(payload, dtype=np.uint8).reshape(tensor.shape)
    decoded = (levels.astype(np.float32) / np.float32(scale) + np.float32(clip_min)).astype(np.float32)
    return RawResult(decoded, len(payload), encode_seconds, time.perf_counter() - start)
