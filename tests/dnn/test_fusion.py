"""Batch norms folded into their convolutions (#20 item 1): every pair of Yolo-Fastest-1.1-XL and ResNet-50 is
folded, and the folded model computes what the unfolded one does, on real images, up to float rounding."""

from __future__ import annotations

import copy

import cv2
import pytest
import torch
from torch import nn

from splitinfer.dnn import load_model
from splitinfer.dnn.fusion import fold_batch_norms
from tests.conftest import shared_path

MODEL = "yolo-fastest-1.1-xl"
IMAGES = ("dog.jpg", "person.jpg", "horses.jpg", "giraffe.jpg", "eagle.jpg")
# Folding changes the order of float operations and nothing else: the largest difference is a few float32
# ulps of the output's range (measured: Yolo-Fastest-1.1-XL 2.3e-6 at cut 60, 4.3e-6 at the output).
RELATIVE_TOLERANCE = 1e-4


def _batch_norms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def _largest_relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    span = float(want.max() - want.min())
    return float((got - want).abs().max()) / span


@pytest.fixture(scope="module")
def unfolded():
    return load_model(MODEL, weights=shared_path("models", "yolo-fastest-1.1"), fold_batch_norm=False)


@pytest.fixture(scope="module")
def images(unfolded) -> torch.Tensor:
    return torch.cat([unfolded.preprocess(cv2.imread(str(shared_path("images", name))))[0] for name in IMAGES])


def test_yolo_fastest_xl_folds_its_82_batch_norms(unfolded) -> None:
    assert _batch_norms(unfolded.network) == 82
    folded = copy.deepcopy(unfolded.network)
    assert fold_batch_norms(folded) == 82
    assert _batch_norms(folded) == 0


def test_load_model_folds_by_default(fastest_xl) -> None:
    assert _batch_norms(fastest_xl.network) == 0


def test_folded_yolo_agrees_with_the_unfolded_model_at_the_cut_and_at_the_output(unfolded, fastest_xl, images) -> None:
    with torch.no_grad():
        want_head = unfolded.split("60").head(images)["layer60"]
        got_head = fastest_xl.split("60").head(images)["layer60"]
        want, got = unfolded(images), fastest_xl(images)
    head = _largest_relative_difference(got_head, want_head)
    whole = max(_largest_relative_difference(g, w) for g, w in zip(got, want, strict=True))
    print(f"folded vs unfolded, largest difference / output range: head at cut 60 {head:.2e}, whole model {whole:.2e}")
    assert head < RELATIVE_TOLERANCE and whole < RELATIVE_TOLERANCE


def _with_random_statistics(model) -> None:
    """Give every batch norm of a randomly initialised model statistics and an affine map away from the identity,
    so that folding has something to get wrong."""
    generator = torch.Generator().manual_seed(20)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def test_resnet50_folds_its_stem_blocks_and_shortcuts_and_agrees() -> None:
    model = load_model("resnet50", pretrained=False, fold_batch_norm=False)
    _with_random_statistics(model)
    assert _batch_norms(model.network) == 53  # stem 1, 16 bottlenecks x 3, 4 shortcuts
    x = model.preprocess(cv2.imread(str(shared_path("images", "dog.jpg"))))[0]
    with torch.no_grad():
        want_cut, want = model.split("layer2").head(x)["layer2"], model(x)
        assert fold_batch_norms(model.network) == 53
        got_cut, got = model.split("layer2").head(x)["layer2"], model(x)
    assert _batch_norms(model.network) == 0
    cut, logits = _largest_relative_difference(got_cut, want_cut), _largest_relative_difference(got, want)
    print(f"resnet50 folded vs unfolded, largest difference / range: layer2 {cut:.2e}, logits {logits:.2e}")
    assert cut < RELATIVE_TOLERANCE and logits < RELATIVE_TOLERANCE


def test_a_network_in_training_mode_is_refused() -> None:
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    with pytest.raises(ValueError, match=r"eval mode \(call \.eval\(\) first\)"):
        fold_batch_norms(network)
    assert _batch_norms(network) == 1


def test_a_second_call_folds_nothing(unfolded) -> None:
    network = copy.deepcopy(unfolded.network)
    fold_batch_norms(network)
    before = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    assert fold_batch_norms(network) == 0
    after = network.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


class _BatchNormWithWork(nn.BatchNorm2d):
    """A subclass that adds work of its own (as timm's BatchNormAct2d adds an activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3), _BatchNormWithWork(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv1(x))


def test_a_batch_norm_subclass_is_left_alone() -> None:
    network = nn.Sequential(nn.Conv2d(3, 4, 3), _BatchNormWithWork(4), _Block()).eval()
    network[2].conv1 = nn.Conv2d(4, 4, 3)
    _with_random_statistics(network)
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = network(x)
        assert fold_batch_norms(network) == 0
        got = network(x)
    assert [type(m) for m in network.modules()].count(_BatchNormWithWork) == 2
    assert torch.equal(got, want)
