"""SplitModel: a network with its preprocessing, postprocessing, class names and the cuts it allows.

Its head, tail and whole network run in torch, or in the runtime chosen with `use_runtime` (ONNX Runtime,
OpenVINO): each graph is exported and compiled on first use, once per cut and part.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from splitinfer.dnn.darknet import DarknetNetwork
from splitinfer.dnn.errors import ModelError
from splitinfer.dnn.graphs import HeadGraph, TailGraph, WholeGraph
from splitinfer.dnn.preprocess import PreprocessInfo
from splitinfer.dnn.results import ClassScore, Detection
from splitinfer.dnn.runtime import CompiledGraph, RuntimeConfig, as_inputs, compile_graph
from splitinfer.dnn.split import Split, TensorSpec
from splitinfer.dnn.staged import StagedNetwork
from splitinfer.dnn.yolo_postprocess import LIVE_SCORE_THRESHOLD, NMS_IOU_THRESHOLD, yolo_detections, yolo_detections_batch

Task = Literal["detection", "classification"]


class SplitModel(nn.Module):
    """A pretrained model that can be cut at any of `cuts()`; eval mode, CPU (dnn.device.place_model moves it)."""

    def __init__(
        self,
        name: str,
        task: Task,
        network: DarknetNetwork | StagedNetwork,
        input_size: tuple[int, int],
        class_names: Sequence[str],
        default_cut: str,
        preprocessor: Callable[[np.ndarray], tuple[torch.Tensor, PreprocessInfo]],
    ) -> None:
        super().__init__()
        self.name = name
        self.task: Task = task
        self.network = network
        self.input_size = input_size
        self.class_names = list(class_names)
        self.default_cut = default_cut
        self._preprocessor = preprocessor
        self.runtime = RuntimeConfig()
        self._graphs: dict[tuple[str, str, RuntimeConfig], CompiledGraph] = {}
        self.runtime_differences: dict[str, float] = {}  # graph name -> largest difference from torch at compile
        self._compile_lock = threading.Lock()
        self.eval()

    def __repr__(self) -> str:
        return f"SplitModel(name={self.name!r}, task={self.task!r}, input_size={self.input_size}, default_cut={self.default_cut!r})"

    def cuts(self) -> list[str]:
        """Every valid cut name (Darknet: layer indices "0".."N-1"; torchvision/timm: stage names)."""
        return self.network.cut_names()

    def use_runtime(self, config: RuntimeConfig) -> SplitModel:
        """Run the head, tail and whole network in `config`'s runtime from now on (graphs compile on first use).

        Splits made before keep the runtime they were made with."""
        with self._compile_lock:
            self.runtime = config
            self._graphs.clear()
        return self

    def split(self, cut: str | int) -> Split:
        """Cut after layer/stage `cut`; an unknown cut raises ModelError saying how to list valid ones."""
        cut = str(cut)
        specs = self.network.tensor_specs(cut)
        canonical = str(self.network.cut_index(cut)) if isinstance(self.network, DarknetNetwork) else cut
        runtime = self.runtime  # the split keeps it after a later use_runtime
        if runtime.compiled:
            return Split(canonical, specs, head=lambda x: self._compiled_head(canonical, specs, x, runtime),
                         tail=lambda tensors: self._compiled_tail(canonical, specs, tensors, runtime))
        return Split(
            canonical,
            specs,
            head=lambda x: self.network.head(canonical, x),
            tail=lambda tensors: self.network.tail(canonical, tensors),
        )

    def _example_input(self) -> torch.Tensor:
        """A fixed input to export and check graphs on (an image-like range, the same every time)."""
        return torch.rand((1, 3, *self.input_size), generator=torch.Generator().manual_seed(0))

    def _graph(self, part: str, cut: str, runtime: RuntimeConfig,
               build: Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]) -> CompiledGraph:
        """The compiled graph of `part` at `cut`; `build` (the module to export and its example input) runs only
        when it is compiled, not on every call."""
        key = (part, cut, runtime)
        graph = self._graphs.get(key)
        if graph is None:
            with self._compile_lock:  # the cloud's executor threads may ask for the same graph at once
                graph = self._graphs.get(key)
                if graph is None:
                    module, example = build()
                    graph, difference = compile_graph(self.name, part, cut, module, example, runtime)
                    self.runtime_differences[f"{part}{'-cut' + cut if cut else ''}"] = difference
                    self._graphs[key] = graph
        return graph

    def _as_network_returns(self, outputs: list[torch.Tensor]) -> Any:
        """A compiled graph's outputs as the torch network returns them: Darknet a list of YOLO maps, a staged
        classifier one tensor of logits."""
        return outputs if isinstance(self.network, DarknetNetwork) else outputs[0]

    def _compiled_head(self, cut: str, specs: list[TensorSpec], x: torch.Tensor,
                       runtime: RuntimeConfig) -> dict[str, torch.Tensor]:
        self.network.check_input(x)
        names = [spec.name for spec in specs]
        graph = self._graph("head", cut, runtime,
                            lambda: (HeadGraph(self.network, cut, names), (self._example_input(),)))
        return {name: torch.from_numpy(value) for name, value in zip(names, graph(as_inputs([x])))}

    def _compiled_tail(self, cut: str, specs: list[TensorSpec], tensors: dict[str, torch.Tensor],
                       runtime: RuntimeConfig) -> Any:
        names = [spec.name for spec in specs]

        def build() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
            with torch.no_grad():  # the tail's example: the head's output on the fixed input
                sent = self.network.head(cut, self._example_input())
            return TailGraph(self.network, cut, names), tuple(sent[name] for name in names)

        graph = self._graph("tail", cut, runtime, build)
        outputs = graph(as_inputs([tensors[name] for name in names]))
        return self._as_network_returns([torch.from_numpy(v) for v in outputs])

    def preprocess(self, image_bgr: np.ndarray) -> tuple[torch.Tensor, PreprocessInfo]:
        """A BGR uint8 image (as cv2.imread gives) -> (1, 3, H, W) float32 input and the info to map boxes back."""
        return self._preprocessor(image_bgr)

    def forward(self, x: torch.Tensor) -> Any:
        """The full (unsplit) model."""
        if self.runtime.compiled:
            self.network.check_input(x)
            graph = self._graph("whole", "", self.runtime, lambda: (WholeGraph(self.network), (self._example_input(),)))
            return self._as_network_returns([torch.from_numpy(v) for v in graph(as_inputs([x]))])
        with torch.no_grad():
            return self.network(x)

    def postprocess(
        self,
        outputs: Any,
        info: PreprocessInfo,
        *,
        score_threshold: float = LIVE_SCORE_THRESHOLD,
        iou_threshold: float = NMS_IOU_THRESHOLD,
        top_k: int = 5,
    ) -> list[Detection] | list[ClassScore]:
        """Detections in source-image pixels (decode + class-aware NMS), or the top_k classes by softmax."""
        if self.task == "detection":
            if not isinstance(self.network, DarknetNetwork):
                raise ModelError(f"internal error: detection model {self.name} has no YOLO heads to decode.")
            return yolo_detections(
                outputs, self.network.yolo_heads, self.input_size, info, self.class_names,
                score_threshold=score_threshold, iou_threshold=iou_threshold,
            )
        logits = outputs if isinstance(outputs, torch.Tensor) else torch.as_tensor(outputs)
        if logits.dim() != 2 or logits.shape[0] != 1 or logits.shape[1] != len(self.class_names):
            raise ModelError(f"expected logits of shape (1, {len(self.class_names)}), got {tuple(logits.shape)}.")
        return self._top_classes(logits[0], top_k)

    def postprocess_batch(
        self,
        outputs: Any,
        infos: Sequence[PreprocessInfo],
        *,
        score_threshold: float = LIVE_SCORE_THRESHOLD,
        iou_threshold: float = NMS_IOU_THRESHOLD,
        top_k: int = 5,
    ) -> list[list[Detection]] | list[list[ClassScore]]:
        """`postprocess` for each image of a batch (outputs of a batched tail, on any device)."""
        if self.task == "detection":
            if not isinstance(self.network, DarknetNetwork):
                raise ModelError(f"internal error: detection model {self.name} has no YOLO heads to decode.")
            return yolo_detections_batch(
                outputs, self.network.yolo_heads, self.input_size, infos, self.class_names,
                score_threshold=score_threshold, iou_threshold=iou_threshold,
            )
        logits = outputs if isinstance(outputs, torch.Tensor) else torch.as_tensor(outputs)
        if logits.dim() != 2 or logits.shape[0] != len(infos) or logits.shape[1] != len(self.class_names):
            raise ModelError(f"expected logits of shape ({len(infos)}, {len(self.class_names)}), got {tuple(logits.shape)}.")
        return [self._top_classes(row, top_k) for row in logits]

    def _top_classes(self, logits: torch.Tensor, top_k: int) -> list[ClassScore]:
        probs = torch.softmax(logits.float(), dim=0)
        scores, indices = probs.topk(min(top_k, probs.numel()))
        return [ClassScore(int(i), self.class_names[int(i)], float(s)) for s, i in zip(scores.tolist(), indices.tolist())]
