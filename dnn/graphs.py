"""The parts of a split network as modules with plain tensor signatures, ready to export.

`Split` speaks in {name: tensor} dicts; an exported graph takes and returns positional tensors. These
wrappers fix the order (the cut's tensor specs), all take positional tensors (`*tensors`, so one
dynamic-batch spec fits every export) and always return a tuple, for Darknet networks (several tensors may
cross a cut; several YOLO maps come out) and staged classifiers (one of each) alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def _as_tuple(outputs: Any) -> tuple[torch.Tensor, ...]:
    return tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)


class HeadGraph(nn.Module):
    """x -> the tensors at the cut, in `names` order."""

    def __init__(self, network: Any, cut: str, names: Sequence[str]) -> None:
        super().__init__()
        self.network, self.cut, self.names = network, cut, list(names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tensors = self.network.head(self.cut, inputs[0])
        return tuple(tensors[name] for name in self.names)


class TailGraph(nn.Module):
    """The tensors at the cut, in `names` order -> the network's outputs."""

    def __init__(self, network: Any, cut: str, names: Sequence[str]) -> None:
        super().__init__()
        self.network, self.cut, self.names = network, cut, list(names)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _as_tuple(self.network.tail(self.cut, dict(zip(self.names, tensors))))


class WholeGraph(nn.Module):
    """x -> the network's outputs (the unsplit model)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _as_tuple(self.network(inputs[0]))
