"""A model cut in two: `head` runs on the edge up to the cut, `tail` finishes in the cloud.

`Split.tensors` lists what crosses the cut (derived from the model graph): the name, the (C, H, W)
shape at the model's input size, and whether values can be negative (the codec's clip range needs it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np
import torch

from splitinfer.dnn.errors import ModelError


@dataclass(frozen=True)
class TensorSpec:
    """One tensor that crosses a cut: name, shape (C, H, W) for one image, signed (False: all values >= 0)."""

    name: str
    shape: tuple[int, ...]
    signed: bool

    @property
    def numel(self) -> int:
        return prod(self.shape)


class Split:
    """The head and tail of a model at one cut; head(x) -> {name: tensor}, tail({name: tensor}) -> outputs."""

    def __init__(
        self,
        cut: str,
        tensors: list[TensorSpec],
        head: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        tail: Callable[[dict[str, torch.Tensor]], Any],
    ) -> None:
        self.cut = cut
        self.tensors = tensors
        self._head, self._tail = head, tail

    def __repr__(self) -> str:
        return f"Split(cut={self.cut!r}, tensors={self.tensors!r})"

    @property
    def numel(self) -> int:
        """Elements that cross the cut per image."""
        return sum(spec.numel for spec in self.tensors)

    def head(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the layers up to and including the cut; returns every tensor the tail reads."""
        with torch.no_grad():
            return self._head(x)

    def tail(self, tensors: Mapping[str, torch.Tensor | np.ndarray], *, grad: bool = False) -> Any:
        """Finish the model from the tensors at the cut (torch tensors or numpy arrays, batch first); `grad` keeps
        the autograd graph (calibration measures the tail's sensitivity to each channel)."""
        expected = {spec.name: spec for spec in self.tensors}
        if not isinstance(tensors, Mapping) or set(tensors) != set(expected):
            got = sorted(tensors) if isinstance(tensors, Mapping) else type(tensors).__name__
            raise ModelError(f"the tail of cut {self.cut} needs tensors {sorted(expected)}, got {got}.")
        ready: dict[str, torch.Tensor] = {}
        batch = None
        for name, value in tensors.items():
            tensor = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
            if not isinstance(tensor, torch.Tensor):
                raise ModelError(f"tensor {name!r} must be a torch.Tensor or numpy array, got {type(value).__name__}.")
            shape = expected[name].shape
            if tensor.dim() != len(shape) + 1 or tuple(tensor.shape[1:]) != shape:
                raise ModelError(f"tensor {name!r} has shape {tuple(tensor.shape)}; cut {self.cut} needs (N, {', '.join(map(str, shape))}).")
            if batch is not None and tensor.shape[0] != batch:
                raise ModelError(f"the tensors at cut {self.cut} disagree on the batch size ({batch} vs {tensor.shape[0]}).")
            batch = tensor.shape[0]
            # fp16/bf16 inputs stay as they are (a model placed in that precision); anything else runs in fp32
            ready[name] = tensor if tensor.dtype in (torch.float16, torch.bfloat16) else tensor.float()
        with torch.set_grad_enabled(grad):
            return self._tail(ready)
