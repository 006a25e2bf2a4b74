"""Images to evaluate on: a folder of image files or a video file; unreadable ones are reported, not fatal."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from splitinfer.dnn.errors import ImageDecodeError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"})


@dataclass(frozen=True)
class Frame:
    """One decoded image (BGR uint8) or the reason it could not be decoded (image is None)."""

    key: str  # file name, or "frame{n}" for a video
    image: np.ndarray | None
    error: str | None = None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """cv2.imread that raises ImageDecodeError instead of returning None."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageDecodeError(f"{path} is not a decodable image (empty, truncated or an unknown format).")
    return image


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder by suffix, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def iter_folder(folder: str | os.PathLike, names: list[str] | None = None) -> Iterator[Frame]:
    paths = [Path(folder) / n for n in names] if names is not None else image_files(folder)
    for path in paths:
        try:
            yield Frame(path.name, read_image(path))
        except ImageDecodeError as exc:
            yield Frame(path.name, None, str(exc))


def iter_video(path: str | os.PathLike, *, step: int = 1, limit: int | None = None) -> Iterator[Frame]:
    """Every `step`-th frame of a video file, at most `limit` of them."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ImageDecodeError(f"cannot open the video {path}: not a video file OpenCV can read.")
    try:
        index = produced = 0
        while limit is None or produced < limit:
            ok, image = capture.read()
            if not ok:
                break
            if index % step == 0:
                yield Frame(f"frame{index}", image)
                produced += 1
            index += 1
    finally:
        capture.release()


def iter_source(path: str | os.PathLike, *, step: int = 1, limit: int | None = None) -> Iterator[Frame]:
    """Frames of a folder of images or a video file (every `step`-th, at most `limit`)."""
    path = Path(path)
    if path.is_dir():
        files = image_files(path)[::step]
        yield from iter_folder(path, [p.name for p in (files if limit is None else files[:limit])])
    elif path.is_file():
        yield from iter_video(path, step=step, limit=limit)
    else:
        raise ImageDecodeError(f"{path} is neither a folder of images nor a video file.")
