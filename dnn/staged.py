"""A network that is a chain of named stages (torchvision / timm classifiers): cut after any stage.

One tensor crosses each cut: the output of the stage named by the cut (e.g. ResNet `layer2`, VGG
`features.16`). Shapes come from one dry run at the model's input size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from splitinfer.dnn.errors import ModelError
from splitinfer.dnn.split import TensorSpec


class StagedNetwork(nn.Module):
    """Stages run in order; `signed[i]` says whether stage i's output can be negative."""

    def __init__(self, stages: Sequence[tuple[str, nn.Module]], signed: Sequence[bool], input_size: tuple[int, int]) -> None:
        super().__init__()
        if len(stages) != len(signed):
            raise ModelError("internal error: every stage needs a signedness flag.")
        self.names = [name for name, _ in stages]
        self.stages = nn.ModuleList([module for _, module in stages])
        self.signed = list(signed)
        self.input_size = input_size
        self._shapes: list[tuple[int, ...]] | None = None

    def _stage_shapes(self) -> list[tuple[int, ...]]:
        if self._shapes is None:
            shapes = []
            with torch.no_grad():
                x = torch.zeros(1, 3, *self.input_size)
                for stage in self.stages:
                    x = stage(x)
                    shapes.append(tuple(x.shape[1:]))
            self._shapes = shapes
        return self._shapes

    def cut_names(self) -> list[str]:
        """Every stage except the last (whose output is the logits)."""
        return self.names[:-1]

    def cut_index(self, cut: str) -> int:
        if cut not in self.cut_names():
            raise ModelError(f"unknown cut {cut!r}; valid cuts are {', '.join(self.cut_names())} (model.cuts() lists them).")
        return self.names.index(cut)

    def tensor_specs(self, cut: str) -> list[TensorSpec]:
        k = self.cut_index(cut)
        return [TensorSpec(cut, self._stage_shapes()[k], self.signed[k])]

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ModelError(f"the network expects an (N, 3, H, W) float tensor, got {got}; use model.preprocess(image).")

    def head(self, cut: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.cut_index(cut)
        self.check_input(x)
        for stage in self.stages[: k + 1]:
            x = stage(x)
        return {cut: x}

    def tail(self, cut: str, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        k = self.cut_index(cut)
        x = tensors[cut]
        for stage in self.stages[k + 1 :]:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        for stage in self.stages:
            x = stage(x)
        return x
