"""YOLO decoding (Darknet's [yolo] layer) and class-aware NMS, boxes mapped back to source pixels.

Decoding and NMS run on the device the raw maps are on; only the kept boxes come back to the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms, nms

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
    boxes, obj, cls = decode_yolo_batch([raw[item:item + 1] for raw in outputs], heads, input_size)
    return boxes[0], obj[0], cls[0]


def _grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                            torch.arange(w, dtype=torch.float32, device=device), indexing="ij")
    return gy, gx


def decode_yolo_batch(
    outputs: Sequence[torch.Tensor], heads: Sequence[YoloHead], input_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw [yolo] maps of a batch -> (boxes (N, M, 4), objectness (N, M), class probs (N, M, C)), on their device."""
    if len(outputs) != len(heads):
        raise ModelError(f"expected {len(heads)} YOLO output maps, got {len(outputs)}.")
    net_h, net_w = input_size
    all_boxes, all_obj, all_cls = [], [], []
    for raw, head in zip(outputs, heads):
        anchors = len(head.anchors)
        n, channels, h, w = raw.shape
        if channels != anchors * (head.classes + 5):
            raise ModelError(f"YOLO map of layer {head.layer} has {channels} channels, expected {anchors * (head.classes + 5)}.")
        p = raw.float().reshape(n, anchors, head.classes + 5, h, w)
        sxy = head.scale_x_y
        gy, gx = _grid(h, w, raw.device)
        cx = (torch.sigmoid(p[:, :, 0]) * sxy - (sxy - 1) / 2 + gx) / w * net_w
        cy = (torch.sigmoid(p[:, :, 1]) * sxy - (sxy - 1) / 2 + gy) / h * net_h
        anchor = torch.tensor(head.anchors, dtype=torch.float32, device=raw.device)
        bw = torch.exp(p[:, :, 2]) * anchor[None, :, 0, None, None]
        bh = torch.exp(p[:, :, 3]) * anchor[None, :, 1, None, None]
        all_boxes.append(torch.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), dim=-1).reshape(n, -1, 4))
        all_obj.append(torch.sigmoid(p[:, :, 4]).reshape(n, -1))
        all_cls.append(torch.sigmoid(p[:, :, 5:]).permute(0, 1, 3, 4, 2).reshape(n, -1, head.classes))
    return torch.cat(all_boxes, 1), torch.cat(all_obj, 1), torch.cat(all_cls, 1)


def yolo_detections_batch(
    outputs: Sequence[torch.Tensor],
    heads: Sequence[YoloHead],
    input_size: tuple[int, int],
    infos: Sequence[PreprocessInfo],
    class_names: Sequence[str],
    *,
    score_threshold: float = LIVE_SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU_THRESHOLD,
    max_detections: int = 300,
    fused: bool | None = None,
) -> list[list[Detection]]:
    """`yolo_detections` for each image of a batch. Unfused (the CPU's default): image by image, exactly the batch-1
    result; fused (a GPU's default): decode and NMS once for the whole batch (NMS in float64, each image x class
    its own group), so a batch costs a few kernel launches rather than a few per image."""
    if outputs and outputs[0].shape[0] != len(infos):
        raise ModelError(f"{len(infos)} preprocess infos for a batch of {outputs[0].shape[0]}.")
    if fused is None:
        fused = bool(outputs) and outputs[0].device.type != "cpu"
    if not outputs or not fused:
        return [yolo_detections([o[i:i + 1] for o in outputs], heads, input_size, info, class_names,
                                score_threshold=score_threshold, iou_threshold=iou_threshold,
                                max_detections=max_detections) for i, info in enumerate(infos)]
    if not 0.0 <= score_threshold < 1.0 or not 0.0 < iou_threshold <= 1.0:
        raise ModelError(f"score_threshold must be in [0, 1) and iou_threshold in (0, 1], got {score_threshold}, {iou_threshold}.")
    with torch.no_grad():
        boxes, obj, cls = decode_yolo_batch(outputs, heads, input_size)
        classes = cls.shape[-1]
        scores = obj[..., None] * cls
        item, anchor, class_idx = torch.nonzero((obj > score_threshold)[..., None] & (scores > score_threshold),
                                                as_tuple=True)
        boxes, scores = boxes[item, anchor].double(), scores[item, anchor, class_idx].double()
        group = item * classes + class_idx
        # One NMS for every (image, class) group: shift each group's boxes apart (float64 keeps them exact).
        offsets = group.double() * (boxes.max() - boxes.min() + 1 if boxes.numel() else 1)
        kept = nms(boxes + offsets[:, None], scores, iou_threshold)
        kept_boxes, kept_scores = boxes[kept].cpu().numpy(), scores[kept].float().cpu().numpy()
        kept_items, kept_classes = item[kept].cpu().numpy(), class_idx[kept].cpu().numpy()
    found: list[list[Detection]] = []
    for i, info in enumerate(infos):
        mine = (kept_items == i).nonzero()[0][:max_detections]  # nms keeps descending score order
        src = info.to_source(kept_boxes[mine])
        detections = []
        for k, j in enumerate(mine):
            x1, y1, x2, y2 = (float(v) for v in src[k].tolist())
            class_id = int(kept_classes[j])
            detections.append(Detection(x1, y1, x2, y2, class_id, class_names[class_id], float(kept_scores[j])))
        found.append(detections)
    return found


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
        src = info.to_source(boxes.double().cpu().numpy())
    class_idx, scores = class_idx.cpu(), scores.cpu()
    return [
        Detection(float(x1), float(y1), float(x2), float(y2), int(class_idx[i]), class_names[int(class_idx[i])], float(scores[i]))
        for i, (x1, y1, x2, y2) in enumerate(src.tolist())
    ]
