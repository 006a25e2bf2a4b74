"""Cutting Darknet models: head + tail equals the full forward pass at every cut, on real images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from splitinfer.dnn import ModelError, Split, TensorSpec
from tests.conftest import shared_path


def _image(name: str = "dog.jpg") -> np.ndarray:
    return cv2.imread(str(shared_path("images", name)))


def test_every_cut_of_yolo_fastest_xl_reproduces_the_full_model(fastest_xl):
    x, _ = fastest_xl.preprocess(_image())
    full = fastest_xl(x)
    assert fastest_xl.cuts() == [str(k) for k in range(131)]
    for cut in fastest_xl.cuts():
        split = fastest_xl.split(cut)
        sent = split.head(x)
        assert list(sent) == [spec.name for spec in split.tensors]
        for spec in split.tensors:
            assert tuple(sent[spec.name].shape[1:]) == spec.shape
            if not spec.signed:
                assert sent[spec.name].min() >= 0
        for got, want in zip(split.tail(sent), full):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_head_matches_the_recorded_real_activations(fastest_xl):
    with np.load(shared_path("activations", "yolo-fastest-1.1-xl.npz")) as recorded:
        files = list(recorded["files"])
        images = torch.cat([fastest_xl.preprocess(cv2.imread(str(shared_path("coco-mini", "calib2017", f))))[0] for f in files])
        for key in ("layer22", "layer34", "layer59", "layer80"):
            want = recorded[key]
            got = fastest_xl.split(key.removeprefix("layer")).head(images[: len(want)])[key]
            # Recorded before batch norms were folded at load: folding reorders float operations (3e-5 relative).
            np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=1e-4)


def test_cut_tensors_come_from_the_route_and_shortcut_graph(fastest_xl):
    assert fastest_xl.split("22").tensors == [TensorSpec("layer22", (64, 80, 80), True)]
    # Layer 103 is a shortcut from layer 98: a cut at 100 must also send 98, and 80 (read by the route at 124).
    assert [t.name for t in fastest_xl.split("100").tensors] == ["layer80", "layer98", "layer100"]
    # After the first [yolo] layer (121) its output crosses the cut as a network output.
    assert [t.name for t in fastest_xl.split("125").tensors] == ["layer121", "layer125"]
    assert fastest_xl.split("layer22").cut == "22"


def test_detects_the_dog_bicycle_and_car_in_source_pixels(fastest_xl):
    image = _image()
    x, info = fastest_xl.preprocess(image)
    found = {d.label: d for d in fastest_xl.postprocess(fastest_xl(x), info)}
    assert {"dog", "bicycle", "car"} <= set(found)
    dog = found["dog"]
    h, w = image.shape[:2]
    assert 0 <= dog.x1 < dog.x2 <= w and 0 <= dog.y1 < dog.y2 <= h
    assert dog.x2 - dog.x1 > 0.3 * w  # the dog spans a large part of the 768 px wide photo
    assert all(d.score >= 0.25 for d in found.values())


def test_unknown_cut_says_how_to_list_cuts(fastest_xl):
    for bad in ("131", "-1", "conv", ""):
        with pytest.raises(ModelError, match=r"model\.cuts\(\)"):
            fastest_xl.split(bad)


def test_tail_rejects_missing_or_misshapen_tensors(fastest_xl):
    split: Split = fastest_xl.split("100")
    x, _ = fastest_xl.preprocess(_image())
    sent = split.head(x)
    with pytest.raises(ModelError, match="needs tensors"):
        split.tail({"layer100": sent["layer100"]})
    with pytest.raises(ModelError, match="shape"):
        split.tail({**sent, "layer98": sent["layer98"][:, :3]})
    numpy_sent = {name: t.numpy() for name, t in sent.items()}
    for got, want in zip(split.tail(numpy_sent), fastest_xl(x)):
        torch.testing.assert_close(got, want)


def test_head_rejects_an_input_of_the_wrong_size(fastest_xl):
    with pytest.raises(ModelError, match="preprocess"):
        fastest_xl.split("22").head(torch.zeros(1, 3, 416, 416))


def test_postprocess_rejects_bad_thresholds_and_batches(fastest_xl):
    x, info = fastest_xl.preprocess(_image())
    outputs = fastest_xl(x)
    with pytest.raises(ModelError, match="score_threshold"):
        fastest_xl.postprocess(outputs, info, score_threshold=1.5)
    with pytest.raises(ModelError, match="batch 1"):
        fastest_xl.postprocess(fastest_xl(torch.cat([x, x])), info)
    with pytest.raises(ModelError, match="expected 2 YOLO output maps"):
        fastest_xl.postprocess(outputs[:1], info)


def test_lower_threshold_only_adds_detections(fastest_xl):
    x, info = fastest_xl.preprocess(_image())
    outputs = fastest_xl(x)
    live = fastest_xl.postprocess(outputs, info)
    low = fastest_xl.postprocess(outputs, info, score_threshold=0.005)
    assert set(live) <= set(low) and len(low) > len(live)
