"""Shared fixtures: the real data beside the checkout (../shared/data), skipped with a reason where absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitinfer.sample_data import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_dir()


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; the calling test is skipped if it does not exist."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: tests that need real data read ../shared/data (or $SPLITINFER_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path()


def truncated_avi(folder: Path, frames: int = 30, keep: float = 0.4) -> tuple[Path, Path]:
    """An MJPG .avi of the sample video's first `frames` frames, and a copy cut to `keep` of its bytes (header
    intact, so the header still reports every frame): a truncated file as a broken copy leaves it."""
    import cv2

    capture = cv2.VideoCapture(str(shared_path("video", "one-by-one-person-detection.mp4")))
    path = folder / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (192, 108))
    for _ in range(frames):
        ok, image = capture.read()
        assert ok
        writer.write(cv2.resize(image, (192, 108)))
    writer.release()
    capture.release()
    data = path.read_bytes()
    cut = folder / "clip-cut.avi"
    cut.write_bytes(data[: int(len(data) * keep)])
    return path, cut
