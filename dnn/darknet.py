"""Darknet cfg + weights -> a torch nn.Module that can run any contiguous range of its layers.

The network keeps the route/shortcut graph (which earlier layer outputs each layer reads), so a cut
after layer k knows exactly which tensors the layers after k need. Layer k is the k-th section after
`[net]` (0-based), as in Darknet and in the activation files of ../shared/data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from splitinfer.dnn.darknet_cfg import REQUIRED, CfgSection, DarknetCfg, cut_index, parse_cfg
from splitinfer.dnn.errors import CfgError, ModelError, WeightsError
from splitinfer.dnn.split import TensorSpec

ACTIVATIONS = ("leaky", "linear", "relu", "mish", "logistic", "swish")
_NON_NEGATIVE = frozenset({"relu", "logistic"})
OUTPUT = -2  # pseudo consumer index: the network's outputs (the yolo layers) are read after the last layer


@dataclass(frozen=True)
class LayerInfo:
    """What one Darknet layer reads and produces (shape is (C, H, W) at the cfg's input size)."""

    index: int
    type: str
    inputs: tuple[int, ...]  # earlier layer indices; -1 is the network input
    shape: tuple[int, int, int]
    signed: bool  # False when every value is >= 0 (relu / logistic outputs)
    line: int


@dataclass(frozen=True)
class YoloHead:
    """A [yolo] layer: its anchors (pixels at the network input size) and decoding constants."""

    layer: int
    anchors: tuple[tuple[float, float], ...]
    classes: int
    scale_x_y: float


class _Activation(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "leaky":
            return F.leaky_relu(x, 0.1)
        if self.kind == "relu":
            return F.relu(x)
        if self.kind == "mish":
            return F.mish(x)
        if self.kind == "logistic":
            return torch.sigmoid(x)
        if self.kind == "swish":
            return F.silu(x)
        return x

    def extra_repr(self) -> str:
        return self.kind


class _MaxPool(nn.Module):
    """Darknet maxpool: `padding` extra pixels (size - 1 by default), padding//2 of them before."""

    def __init__(self, size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.size, self.stride, self.padding = size, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = self.padding // 2
        after = self.padding - before
        x = F.pad(x, (before, after, before, after), value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)


class _Upsample(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.stride, mode="nearest")


class _Shortcut(nn.Module):
    def __init__(self, activation: str) -> None:
        super().__init__()
        self.activation = _Activation(activation)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.activation(a + b)


class _Route(nn.Module):
    def __init__(self, groups: int, group_id: int) -> None:
        super().__init__()
        self.groups, self.group_id = groups, group_id

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.groups > 1:
            xs = tuple(x.chunk(self.groups, dim=1)[self.group_id] for x in xs)
        return xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)


def _conv_block(section: CfgSection, in_channels: int) -> nn.Sequential:
    filters = section.get_int("filters", REQUIRED)
    size = section.get_int("size", 1)
    stride = section.get_int("stride", 1)
    groups = section.get_int("groups", 1)
    padding = size // 2 if section.get_int("pad", 0) else section.get_int("padding", 0)
    batch_norm = bool(section.get_int("batch_normalize", 0))
    activation = section.get_str("activation", "logistic")
    if activation not in ACTIVATIONS:
        raise CfgError(f"{section.where()}: activation '{activation}' is not supported; use one of {', '.join(ACTIVATIONS)}.")
    if filters <= 0 or size <= 0 or stride <= 0 or groups <= 0:
        raise CfgError(f"{section.where()}: filters, size, stride and groups must be positive integers.")
    if in_channels % groups or filters % groups:
        raise CfgError(
            f"{section.where()}: groups={groups} must divide both the {in_channels} input channels and filters={filters}."
        )
    block = nn.Sequential()
    block.add_module("conv", nn.Conv2d(in_channels, filters, size, stride, padding, groups=groups, bias=not batch_norm))
    if batch_norm:
        block.add_module("bn", nn.BatchNorm2d(filters, eps=1e-5))
    block.add_module("act", _Activation(activation))
    return block


class DarknetNetwork(nn.Module):
    """All layers of a Darknet cfg; `run(first, last, ...)` executes a contiguous range of them."""

    def __init__(self, cfg: DarknetCfg) -> None:
        super().__init__()
        self.source = cfg.source
        net = cfg.net
        self.input_channels = net.get_int("channels", 3)
        self.input_size = (net.get_int("height", REQUIRED), net.get_int("width", REQUIRED))
        if self.input_channels <= 0 or min(self.input_size) <= 0:
            raise CfgError(f"{net.where()}: width, height and channels must be positive.")
        self.layers = nn.ModuleList()
        infos: list[LayerInfo] = []
        heads: list[YoloHead] = []
        shape = (self.input_channels, *self.input_size)
        signed = False
        for index, section in enumerate(cfg.layers):
            module, inputs, shape, signed = self._build_layer(index, section, infos, shape, signed, heads)
            self.layers.append(module)
            infos.append(LayerInfo(index, section.type, inputs, shape, signed, section.line))
        if not heads:
            raise CfgError(f"{cfg.source}: the cfg has no [yolo] layer, so the network has no output.")
        self.infos: tuple[LayerInfo, ...] = tuple(infos)
        self.yolo_heads: tuple[YoloHead, ...] = tuple(heads)
        self._consumers = self._consumer_map()
        self._last_use = {
            j: len(infos) if OUTPUT in users else max(users, default=j) for j, users in self._consumers.items()
        }

    def _build_layer(
        self, index: int, section: CfgSection, infos: list[LayerInfo], previous_shape: tuple[int, int, int],
        previous_signed: bool, heads: list[YoloHead],
    ) -> tuple[nn.Module, tuple[int, ...], tuple[int, int, int], bool]:
        """The module of one layer, the layers it reads, its output shape and signedness."""
        kind = section.type
        shapes = [info.shape for info in infos]

        def ref(offset: int) -> int:
            target = index + offset if offset < 0 else offset
            if not 0 <= target < index:
                raise CfgError(
                    f"{section.where()}: layer {index} refers to layer {offset} (= {target}), but only layers "
                    f"0..{index - 1} come before it; use a negative offset or an earlier absolute index."
                )
            return target

        prev = index - 1
        if kind == "convolutional":
            block = _conv_block(section, previous_shape[0])
            conv = cast(nn.Conv2d, block.conv)  # torch types a submodule attribute as Tensor | Module
            pad = cast(tuple[int, int], conv.padding)  # _conv_block passes a number, never "same" or "valid"
            h = (previous_shape[1] + 2 * pad[0] - conv.kernel_size[0]) // conv.stride[0] + 1
            w = (previous_shape[2] + 2 * pad[1] - conv.kernel_size[1]) // conv.stride[1] + 1
            if h <= 0 or w <= 0:
                raise CfgError(f"{section.where()}: the convolution leaves no pixels of its {previous_shape} input.")
            return block, (prev,), (conv.out_channels, h, w), cast(_Activation, block.act).kind not in _NON_NEGATIVE
        if kind == "maxpool":
            stride = section.get_int("stride", 1)
            size = section.get_int("size", stride)
            padding = section.get_int("padding", size - 1)
            if stride <= 0 or size <= 0 or padding < 0:
                raise CfgError(f"{section.where()}: size and stride must be positive and padding non-negative.")
            c, hh, ww = previous_shape
            shape = (c, (hh + padding - size) // stride + 1, (ww + padding - size) // stride + 1)
            return _MaxPool(size, stride, padding), (prev,), shape, previous_signed
        if kind == "upsample":
            stride = section.get_int("stride", 2)
            if stride <= 0:
                raise CfgError(f"{section.where()}: stride must be a positive integer (downsampling is not supported).")
            c, hh, ww = previous_shape
            return _Upsample(stride), (prev,), (c, hh * stride, ww * stride), previous_signed
        if kind == "dropout":
            return nn.Identity(), (prev,), previous_shape, previous_signed
        if kind == "shortcut":
            froms = section.get_ints("from", REQUIRED)
            if len(froms) != 1:
                raise CfgError(f"{section.where()}: shortcut supports exactly one 'from' layer, got {froms}.")
            other = ref(froms[0])
            activation = section.get_str("activation", "linear")
            if activation not in ACTIVATIONS:
                raise CfgError(f"{section.where()}: activation '{activation}' is not supported; use one of {', '.join(ACTIVATIONS)}.")
            if shapes[other] != previous_shape:
                raise CfgError(
                    f"{section.where()}: shortcut adds layer {other} {shapes[other]} to layer {prev} {previous_shape}; "
                    "the shapes must be equal."
                )
            signed = activation not in _NON_NEGATIVE and (previous_signed or infos[other].signed)
            return _Shortcut(activation), (prev, other), previous_shape, signed
        if kind == "route":
            targets = tuple(ref(offset) for offset in section.get_ints("layers", REQUIRED))
            if not targets:
                raise CfgError(f"{section.where()}: 'layers' lists no layer.")
            groups = section.get_int("groups", 1)
            group_id = section.get_int("group_id", 0)
            if groups <= 0 or not 0 <= group_id < groups:
                raise CfgError(f"{section.where()}: need groups >= 1 and 0 <= group_id < groups, got {groups}, {group_id}.")
            sizes = {shapes[t][1:] for t in targets}
            if len(sizes) != 1:
                raise CfgError(
                    f"{section.where()}: route joins layers {list(targets)} of different sizes "
                    f"{[shapes[t] for t in targets]}; they must share height and width."
                )
            if any(shapes[t][0] % groups for t in targets):
                raise CfgError(f"{section.where()}: groups={groups} does not divide the channels of layers {list(targets)}.")
            channels = sum(shapes[t][0] // groups for t in targets)
            signed = any(infos[t].signed for t in targets)
            return _Route(groups, group_id), targets, (channels, *shapes[targets[0]][1:]), signed
        # yolo
        classes = section.get_int("classes", 80)
        try:
            floats = [float(a) for a in section.get_str("anchors", REQUIRED).split(",") if a.strip()]
        except ValueError as exc:
            raise CfgError(f"{section.where()}: 'anchors' must be a comma-separated list of numbers.") from exc
        if len(floats) % 2:
            raise CfgError(f"{section.where()}: 'anchors' must hold width,height pairs; got an odd count {len(floats)}.")
        pairs = [(float(floats[i]), float(floats[i + 1])) for i in range(0, len(floats), 2)]
        mask = section.get_ints("mask", None) or list(range(len(pairs)))
        if any(not 0 <= m < len(pairs) for m in mask):
            raise CfgError(f"{section.where()}: mask {mask} refers to anchors beyond the {len(pairs)} given.")
        expected = len(mask) * (classes + 5)
        if previous_shape[0] != expected:
            raise CfgError(
                f"{section.where()}: the layer before [yolo] has {previous_shape[0]} channels; "
                f"{len(mask)} anchors x ({classes} classes + 5) = {expected} expected."
            )
        heads.append(YoloHead(index, tuple(pairs[m] for m in mask), classes, section.get_float("scale_x_y", 1.0)))
        return nn.Identity(), (prev,), previous_shape, previous_signed

    def _consumer_map(self) -> dict[int, set[int]]:
        consumers: dict[int, set[int]] = {info.index: set() for info in self.infos}
        for info in self.infos:
            for j in info.inputs:
                if j >= 0:
                    consumers[j].add(info.index)
        for head in self.yolo_heads:
            consumers[head.layer].add(OUTPUT)
        return consumers

    @property
    def num_layers(self) -> int:
        return len(self.infos)

    def crossing(self, cut: int) -> list[int]:
        """Layers <= cut whose outputs are read after the cut (by a later layer or as a network output)."""
        return [j for j in range(cut + 1) if any(u > cut or u == OUTPUT for u in self._consumers[j])]

    def run(self, first: int, last: int, cache: dict[int, torch.Tensor], keep: frozenset[int] | set[int] = frozenset()) -> dict[int, torch.Tensor]:
        """Run layers first..last reading earlier outputs from `cache` (-1 = input); returns the cache.

        Tensors no longer needed after `last` are dropped, except those listed in `keep`.
        """
        for index in range(first, last + 1):
            info, module = self.infos[index], self.layers[index]
            args = [cache[j] for j in info.inputs]
            cache[index] = module(*args)
            for j in info.inputs:
                if j < 0 or (self._last_use[j] <= index and j not in keep):
                    cache.pop(j, None)
        return cache

    def check_input(self, x: torch.Tensor) -> None:
        expected = (self.input_channels, *self.input_size)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ModelError(f"the network expects a (N, {', '.join(map(str, expected))}) float tensor, got {got}; use model.preprocess(image).")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The full network: the raw maps of each [yolo] layer, (N, anchors * (5 + classes), H, W)."""
        self.check_input(x)
        cache = self.run(0, self.num_layers - 1, {-1: x})
        return [cache[head.layer] for head in self.yolo_heads]

    def cut_names(self) -> list[str]:
        """Every layer index is a valid cut: "0" .. str(num_layers - 1)."""
        return [str(i) for i in range(self.num_layers)]

    def cut_index(self, cut: str) -> int:
        return cut_index(cut, self.num_layers)

    def tensor_specs(self, cut: str) -> list[TensorSpec]:
        """The tensors that cross a cut after layer `cut`, named "layer{k}"."""
        return [
            TensorSpec(f"layer{j}", self.infos[j].shape, self.infos[j].signed)
            for j in self.crossing(self.cut_index(cut))
        ]

    def head(self, cut: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.cut_index(cut)
        self.check_input(x)
        needed = self.crossing(k)
        cache = self.run(0, k, {-1: x}, keep=set(needed))
        return {f"layer{j}": cache[j] for j in needed}

    def tail(self, cut: str, tensors: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        k = self.cut_index(cut)
        cache = {int(name.removeprefix("layer")): tensor for name, tensor in tensors.items()}
        cache = self.run(k + 1, self.num_layers - 1, cache)
        return [cache[head.layer] for head in self.yolo_heads]


def _conv_blocks(network: DarknetNetwork) -> list[nn.Sequential]:
    return [cast(nn.Sequential, layer) for layer, info in zip(network.layers, network.infos) if info.type == "convolutional"]


def expected_weight_count(network: DarknetNetwork) -> int:
    """How many float32 values a .weights file for this cfg holds after its header."""
    total = 0
    for block in _conv_blocks(network):
        conv = cast(nn.Conv2d, block.conv)
        total += conv.out_channels * (4 if hasattr(block, "bn") else 1) + conv.weight.numel()
    return total


def load_darknet_weights(network: DarknetNetwork, path: str | os.PathLike) -> None:
    """Fill the network from a Darknet .weights file; its size must match the cfg exactly."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read the weights file {path}: {exc.strerror or exc}.") from exc
    if len(data) < 16:
        raise WeightsError(f"the weights file {path} is {len(data)} bytes, shorter than a Darknet header (16 or 20 bytes).")
    major, minor, _revision = np.frombuffer(data[:12], dtype="<i4")
    header = 20 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 16
    body = len(data) - header
    expected = expected_weight_count(network)
    if body % 4 or body // 4 != expected:
        raise WeightsError(
            f"the weights file {path} holds {body / 4:g} float32 values after its {header}-byte header, but "
            f"the cfg {network.source} needs exactly {expected}: the weights belong to another cfg or the file "
            "is truncated; download it again or pass the matching cfg."
        )
    values = np.frombuffer(data, dtype="<f4", offset=header)
    offset = 0

    def take(tensor: torch.Tensor | None) -> None:
        nonlocal offset
        if tensor is None:  # pragma: no cover - every conv has a bias or a batch norm with running statistics
            raise WeightsError(f"internal error: a convolution block of {network.source} lacks a parameter.")
        count = tensor.numel()
        tensor.copy_(torch.from_numpy(values[offset : offset + count].copy()).view_as(tensor))
        offset += count

    with torch.no_grad():
        for block in _conv_blocks(network):
            conv = cast(nn.Conv2d, block.conv)
            if hasattr(block, "bn"):
                bn = cast(nn.BatchNorm2d, block.bn)
                take(bn.bias)
                take(bn.weight)
                take(bn.running_mean)
                take(bn.running_var)
            else:
                take(conv.bias)
            take(conv.weight)
    if offset != expected:  # pragma: no cover - guarded by the size check above
        raise WeightsError(f"internal error: consumed {offset} of {expected} values of {path}.")


def build_darknet(cfg_path: str | os.PathLike, weights_path: str | os.PathLike | None) -> DarknetNetwork:
    """Parse the cfg, build the network, load weights if given; eval mode."""
    network = DarknetNetwork(parse_cfg(cfg_path))
    if weights_path is not None:
        load_darknet_weights(network, weights_path)
    return network.eval()
