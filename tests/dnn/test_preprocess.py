"""Preprocessing: each model's input convention, and boxes that map back to source pixels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitinfer.dnn import ModelError
from splitinfer.dnn.preprocess import CenterCropPreprocess, LetterboxPreprocess, ResizePreprocess

_sizes = st.tuples(st.integers(8, 700), st.integers(8, 700))


@given(_sizes)
def test_letterbox_maps_the_image_corners_back_to_the_source_corners(size):
    h, w = size
    x, info = LetterboxPreprocess(416, 416)(np.zeros((h, w, 3), np.uint8))
    assert x.shape == (1, 3, 416, 416)
    new_w, new_h = round(w * info.scale_x), round(h * info.scale_y)
    corners = np.array([[info.pad_x, info.pad_y, info.pad_x + new_w, info.pad_y + new_h]], dtype=np.float64)
    np.testing.assert_allclose(info.to_source(corners), [[0, 0, w, h]], atol=1e-6)


@given(_sizes)
def test_plain_resize_maps_network_pixels_linearly_and_clips(size):
    h, w = size
    x, info = ResizePreprocess(320, 320)(np.zeros((h, w, 3), np.uint8))
    assert x.shape == (1, 3, 320, 320)
    np.testing.assert_allclose(info.to_source(np.array([[-5.0, 0, 160, 400]])), [[0, 0, w / 2, h]], rtol=1e-9)


def test_resize_converts_bgr_to_rgb_in_unit_range():
    image = np.zeros((10, 10, 3), np.uint8)
    image[..., 0] = 255  # blue in OpenCV's BGR
    x, _ = ResizePreprocess(4, 4)(image)
    assert x[0, 2].min() == 1.0 and x[0, 0].max() == 0.0


def test_letterbox_pads_with_grey():
    x, info = LetterboxPreprocess(416, 416)(np.zeros((100, 400, 3), np.uint8))
    assert info.pad_y == 156 and float(x[0, 0, 0, 0]) == 0.5 and float(x[0, 0, 208, 208]) == 0.0


def test_center_crop_normalises():
    pre = CenterCropPreprocess(256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    x, _ = pre(np.full((300, 500, 3), 255, np.uint8))
    assert x.shape == (1, 3, 224, 224) and float(x.min()) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [
    np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((0, 10, 3), np.uint8),
    np.zeros((3,), np.uint8), "image.jpg", None,
])
def test_bad_images_are_model_errors(bad):
    for pre in (ResizePreprocess(32, 32), LetterboxPreprocess(32, 32), CenterCropPreprocess(36, 32, (0,) * 3, (1,) * 3)):
        with pytest.raises(ModelError, match="uint8 BGR"):
            pre(bad)


def test_grey_images_are_accepted():
    x, _ = ResizePreprocess(32, 32)(np.zeros((20, 20), np.uint8))
    assert x.shape == (1, 3, 32, 32)


def _old_center_crop(image: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """The former resize-the-whole-image-then-crop, as the reference for the crop-first version."""
    import cv2

    h, w = image.shape[:2]
    scale = resize / min(h, w)
    new_w, new_h = max(crop, round(w * scale)), max(crop, round(h * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    return resized[top : top + crop, left : left + crop]


def test_center_crop_first_matches_resize_then_crop_on_a_real_image() -> None:
    from splitinfer.dnn.eval_images import read_image
    from tests.conftest import shared_path

    image = read_image(shared_path("images", "dog.jpg"))
    pre = CenterCropPreprocess(256, 224, (0.0,) * 3, (1.0,) * 3)
    x, _ = pre(image)
    ours = x[0].permute(1, 2, 0).numpy() * 255.0
    reference = _old_center_crop(image, 256, 224)[:, :, ::-1].astype(np.float32)
    assert ours.shape == reference.shape
    assert float(np.abs(ours - reference).mean()) < 6.0  # sub-pixel differences in the window only


@pytest.mark.slow  # a fresh interpreter that imports torch
def test_center_crop_memory_is_bounded_for_extreme_aspect_ratios() -> None:
    """A 1x4000 image took 1.7 GB (resized to 256x1024000 before cropping); the peak must stay small."""
    import subprocess
    import sys

    code = (
        "import resource, numpy as np\n"
        "from splitinfer.dnn.preprocess import CenterCropPreprocess\n"
        "pre = CenterCropPreprocess(256, 224, (0.5,) * 3, (0.5,) * 3)\n"
        "pre(np.zeros((8, 8, 3), np.uint8))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "x, _ = pre(np.full((1, 4000, 3), 200, np.uint8))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "assert tuple(x.shape) == (1, 3, 224, 224)\n"
        "print((after - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    grown_mb = int(out.stdout.strip().splitlines()[-1])
    assert grown_mb < 100, f"preprocessing a 1x4000 image grew the peak RSS by {grown_mb} MB"
