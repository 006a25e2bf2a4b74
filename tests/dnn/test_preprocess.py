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
