"""YOLO decoding (Darknet's [yolo] layer) and class-aware NMS, boxes mapped back to source pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms

from splitinfer.dnn.darknet import YoloHead
from splitinfer.dnn.errors import ModelError
from splitinfer.dnn.preprocess import PreprocessInfo
from splitinfer.dnn.results import Detection

EVAL_SCORE_THRESHOLD = 0.005  # Darknet `detector map` keeps candidates down to this score for AP
LIVE_SCORE_THRESHOLD = 0.25  # Darknet's default for showing detections
NMS_IOU_THRESHOLD = 0.45


def decode_yolo(
    outputs: Sequence[torch.Tensor], heads: Sequence[YoloHead], input_size: tuple[int, int], item: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw [yolo] maps of batch item `item` -> (boxes xyxy in network pixels (M, 4), objectness (M,), class probs (M, C))."""
    if len(outputs) != len(heads):
        raise ModelError(f"expected {len(heads)} YOLO output maps, got {len(outputs)}.")
    net_h, net_w = input_size
    all_boxes, all_obj, all_cls = [], [], []
    for raw, head in zip(outputs, heads):
        anchors = len(head.anchors)
        _, channels, h, w = raw.shape
        if channels != anchors * (head.classes + 5):
            raise ModelError(f"YOLO map of layer {head.layer} has {channels} channels, expected {anchors * (head.classes + 5)}.")
        p = raw[item].float().view(anchors, head.classes + 5, h, w)
        sxy = head.scale_x_y
        gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        cx = (torch.sigmoid(p[:, 0]) * sxy - (sxy - 1) / 2 + gx) / w * net_w
        cy = (torch.sigmoid(p[:, 1]) * sxy - (sxy - 1) / 2 + gy) / h * net_h
        anchor = torch.tensor(head.anchors, dtype=torch.float32)
        bw = torch.exp(p[:, 2]) * anchor[:, 0, None, None]
        bh = torch.exp(p[:, 3]) * anchor[:, 1, None, None]
        boxes = torch.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), dim=-1).reshape(-1, 4)
        all_boxes.append(boxes)
        all_obj.append(torch.sigmoid(p[:, 4]).reshape(-1))
        all_cls.append(torch.sigmoid(p[:, 5:]).permute(0, 2, 3, 1).reshape(-1, head.classes))
    return torch.cat(all_boxes), torch.cat(all_obj), torch.cat(all_cls)


def yolo_detections(
    outputs: Sequence[torch.Tensor],
    heads: Sequence[YoloHead],
    input_size: tuple[int, int],
    info: PreprocessInfo,
    class_names: Sequence[str],
    *,
    score_threshold: float = LIVE_SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU_THRESHOLD,
    max_detections: int = 300,
) -> list[Detection]:
    """Darknet-style detections: every class with objectness x class prob > threshold, NMS per class."""
    if not 0.0 <= score_threshold < 1.0 or not 0.0 < iou_threshold <= 1.0:
        raise ModelError(f"score_threshold must be in [0, 1) and iou_threshold in (0, 1], got {score_threshold}, {iou_threshold}.")
    if outputs and outputs[0].shape[0] != 1:
        raise ModelError(f"postprocess takes the outputs of one image (batch 1), got batch {outputs[0].shape[0]}.")
    with torch.no_grad():
        boxes, obj, cls = decode_yolo(outputs, heads, input_size)
        keep = obj > score_threshold
        boxes, scores = boxes[keep], obj[keep, None] * cls[keep]
        box_idx, class_idx = torch.nonzero(scores > score_threshold, as_tuple=True)
        boxes, scores = boxes[box_idx], scores[box_idx, class_idx]
        kept = batched_nms(boxes, scores, class_idx, iou_threshold)[:max_detections]
        boxes, scores, class_idx = boxes[kept], scores[kept], class_idx[kept]
        src = info.to_source(boxes.double().numpy())
    return [
        Detection(float(x1), float(y1), float(x2), float(y2), int(class_idx[i]), class_names[int(class_idx[i])], float(scores[i]))
        for i, (x1, y1, x2, y2) in enumerate(src.tolist())
    ]
