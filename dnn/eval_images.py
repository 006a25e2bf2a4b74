"""Images to evaluate on: a folder of image files or a video file; unreadable ones are reported, not fatal."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from splitinfer.dnn.errors import ImageDecodeError

log = logging.getLogger("splitinfer.eval")
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


# A video that ends this far short of its header's frame count is truncated or corrupt (headers round a little).
TRUNCATION_TOLERANCE = 0.02


def video_frame_count(path: str | os.PathLike) -> int | None:
    """The frame count a video's header reports, or None when it reports none."""
    capture = cv2.VideoCapture(str(path))
    try:
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if capture.isOpened() else 0
    finally:
        capture.release()
    return int(count) if count and count > 0 else None


def truncation_message(path: str | os.PathLike, read: int, reported: int | None) -> str | None:
    """A sentence when a video ended well before the frame count its header reports, else None."""
    if reported is None or read >= reported * (1.0 - TRUNCATION_TOLERANCE) or reported - read <= 1:
        return None
    return (f"the video {path} ended after {read} of the {reported} frames its header reports: the file is "
            "truncated or corrupt, so the figures cover only the frames read (re-copy or re-encode it; "
            "--allow-truncated accepts it)")


def iter_video(path: str | os.PathLike, *, step: int = 1, limit: int | None = None,
               on_truncated: Callable[[str], None] | None = None) -> Iterator[Frame]:
    """Every `step`-th frame of a video file, at most `limit` of them; `on_truncated` hears of an early end."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ImageDecodeError(f"cannot open the video {path}: not a video file OpenCV can read.")
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    reported = int(count) if count and count > 0 else None
    try:
        index = produced = 0
        while limit is None or produced < limit:
            ok, image = capture.read()
            if not ok:
                message = truncation_message(path, index, reported)
                if message:
                    log.warning("%s", message)
                    if on_truncated is not None:
                        on_truncated(message)
                break
            if index % step == 0:
                yield Frame(f"frame{index}", image)
                produced += 1
            index += 1
    finally:
        capture.release()


def source_length(path: str | os.PathLike, *, step: int = 1, limit: int | None = None) -> int | None:
    """How many frames iter_source will give, as far as is known beforehand (for progress bars)."""
    path = Path(path)
    if path.is_dir():
        total = len(image_files(path)[::step])
    else:
        reported = video_frame_count(path)
        if reported is None:
            return None
        total = -(-reported // step)
    return total if limit is None else min(total, limit)


def iter_source(path: str | os.PathLike, *, step: int = 1, limit: int | None = None,
                on_truncated: Callable[[str], None] | None = None) -> Iterator[Frame]:
    """Frames of a folder of images or a video file (every `step`-th, at most `limit`)."""
    path = Path(path)
    if path.is_dir():
        files = image_files(path)[::step]
        yield from iter_folder(path, [p.name for p in (files if limit is None else files[:limit])])
    elif path.is_file():
        yield from iter_video(path, step=step, limit=limit, on_truncated=on_truncated)
    else:
        raise ImageDecodeError(f"{path} is neither a folder of images nor a video file.")
