"""SplitModel: a network with its preprocessing, postprocessing, class names and the cuts it allows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from splitinfer.dnn.darknet import DarknetNetwork
from splitinfer.dnn.errors import ModelError
from splitinfer.dnn.preprocess import PreprocessInfo
from splitinfer.dnn.results import ClassScore, Detection
from splitinfer.dnn.split import Split
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
        self.eval()

    def __repr__(self) -> str:
        return f"SplitModel(name={self.name!r}, task={self.task!r}, input_size={self.input_size}, default_cut={self.default_cut!r})"

    def cuts(self) -> list[str]:
        """Every valid cut name (Darknet: layer indices "0".."N-1"; torchvision/timm: stage names)."""
        return self.network.cut_names()

    def split(self, cut: str | int) -> Split:
        """Cut after layer/stage `cut`; an unknown cut raises ModelError saying how to list valid ones."""
        cut = str(cut)
        specs = self.network.tensor_specs(cut)
        canonical = str(self.network.cut_index(cut)) if isinstance(self.network, DarknetNetwork) else cut
        return Split(
            canonical,
            specs,
            head=lambda x: self.network.head(canonical, x),
            tail=lambda tensors: self.network.tail(canonical, tensors),
        )

    def preprocess(self, image_bgr: np.ndarray) -> tuple[torch.Tensor, PreprocessInfo]:
        """A BGR uint8 image (as cv2.imread gives) -> (1, 3, H, W) float32 input and the info to map boxes back."""
        return self._preprocessor(image_bgr)

    def forward(self, x: torch.Tensor) -> Any:
        """The full (unsplit) model."""
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
