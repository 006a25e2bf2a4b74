"""JPEG of the network's input picture (OpenCV / libjpeg): the send-the-picture baseline."""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class JpegResult:
    """The decoded picture, its coded size and the encode/decode seconds."""

    image: np.ndarray
    nbytes: int
    encode_seconds: float
    decode_seconds: float


def jpeg_roundtrip(bgr: np.ndarray, quality: int, size: tuple[int, int] | None = None) -> JpegResult:
    """JPEG-code a BGR uint8 picture at `quality` (1-100), first resized to `size` (w, h) if given.

    Resizing to the network's input size first is what an edge would do: nothing beyond it is used.
    """
    image = bgr if size is None else cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    start = time.perf_counter()
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    encode_seconds = time.perf_counter() - start
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the picture")
    start = time.perf_counter()
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    decode_seconds = time.perf_counter() - start
    return JpegResult(decoded, int(encoded.size), encode_seconds, decode_seconds)
