"""COCO detection metrics with pycocotools, their leave-one-image-out jackknife, and detection fidelity.

`PerImageAP` re-does pycocotools' accumulate step (area "all", 100 detections) from the per-image
matches of COCOeval.evaluate(), so AP on any subset of images (here: all but one) costs milliseconds;
on the full set it equals COCOeval.stats[0] and stats[1] exactly.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from splitinfer.dnn.results import Detection


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def to_coco_results(detections: Mapping[int, Sequence[Detection]], category_ids: Sequence[int]) -> list[dict]:
    """Detections per image id -> COCO results (bbox x, y, w, h); class i -> category_ids[i]."""
    return [
        {
            "image_id": image_id,
            "category_id": int(category_ids[d.class_id]),
            "bbox": [d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1],
            "score": d.score,
        }
        for image_id, dets in detections.items()
        for d in dets
    ]


@dataclass
class _CategoryMatches:
    image_of_det: np.ndarray  # (D,) image position of each detection, detections sorted by score
    matched: np.ndarray  # (T, D) bool: detection matched a non-ignored ground truth at IoU threshold t
    ignored: np.ndarray  # (T, D) bool
    gt_per_image: np.ndarray  # (I,) non-ignored ground truths per image position


class PerImageAP:
    """AP and AP50 (COCO definition) over any subset of the evaluated images."""

    def __init__(self, coco_gt, results: list[dict], image_ids: Sequence[int]) -> None:
        from pycocotools.cocoeval import COCOeval

        self.image_ids = list(image_ids)
        with _quiet():
            coco_dt = coco_gt.loadRes(results or _empty_result(coco_gt, self.image_ids))
            evaluator = COCOeval(coco_gt, coco_dt, "bbox")
            evaluator.params.imgIds = self.image_ids
            evaluator.evaluate()
        params = evaluator.params
        self.image_ids = list(params.imgIds)  # evaluate() sorts them: positions below follow this order
        self.rec_thresholds = params.recThrs
        self.iou_count = len(params.iouThrs)
        max_det = params.maxDets[-1]
        images = len(params.imgIds)
        areas = len(params.areaRng)
        self._categories: list[_CategoryMatches] = []
        for k in range(len(params.catIds)):
            entries = [(i, evaluator.evalImgs[k * areas * images + i]) for i in range(images)]
            entries = [(i, e) for i, e in entries if e is not None]
            gt_per_image = np.zeros(images, dtype=np.int64)
            if not entries:
                self._categories.append(_CategoryMatches(np.zeros(0, int), np.zeros((self.iou_count, 0), bool), np.zeros((self.iou_count, 0), bool), gt_per_image))
                continue
            scores = np.concatenate([e["dtScores"][:max_det] for _, e in entries])
            order = np.argsort(-scores, kind="mergesort")
            image_of_det = np.concatenate([np.full(len(e["dtScores"][:max_det]), i) for i, e in entries])[order]
            matched = np.concatenate([e["dtMatches"][:, :max_det] for _, e in entries], axis=1)[:, order] != 0
            ignored = np.concatenate([e["dtIgnore"][:, :max_det] for _, e in entries], axis=1)[:, order].astype(bool)
            for i, e in entries:
                gt_per_image[i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            self._categories.append(_CategoryMatches(image_of_det, matched, ignored, gt_per_image))
        self._full = [self._category_precision(c, None) for c in self._categories]

    def _category_precision(self, cat: _CategoryMatches, left_out: int | None) -> np.ndarray | None:
        """(T, R) interpolated precision, or None when the category has no ground truth in the subset."""
        npig = int(cat.gt_per_image.sum() - (cat.gt_per_image[left_out] if left_out is not None else 0))
        if npig == 0:
            return None
        keep = cat.image_of_det != left_out if left_out is not None else slice(None)
        matched, ignored = cat.matched[:, keep], cat.ignored[:, keep]
        tps = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
        fps = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
        out = np.zeros((self.iou_count, len(self.rec_thresholds)))
        for t in range(self.iou_count):
            tp, fp = tps[t], fps[t]
            if tp.size == 0:
                continue
            recall = tp / npig
            precision = tp / (fp + tp + np.spacing(1))
            precision = np.maximum.accumulate(precision[::-1])[::-1]
            index = np.searchsorted(recall, self.rec_thresholds, side="left")
            valid = index < len(precision)
            out[t, valid] = precision[index[valid]]
        return out

    @staticmethod
    def _summary(per_category: Sequence[np.ndarray | None]) -> tuple[float, float]:
        valid = [p for p in per_category if p is not None]
        if not valid:
            return float("nan"), float("nan")
        stacked = np.stack(valid)
        return float(stacked.mean()), float(stacked[:, 0].mean())

    def ap(self) -> tuple[float, float]:
        """(AP over IoU 0.50:0.95, AP50) on all images."""
        return self._summary(self._full)

    def leave_one_out(self) -> np.ndarray:
        """(I, 2) array: AP and AP50 with image i left out, for each image position i."""
        out = np.empty((len(self.image_ids), 2))
        for i in range(len(self.image_ids)):
            per_category = [
                self._category_precision(c, i) if (c.gt_per_image[i] or np.any(c.image_of_det == i)) else full
                for c, full in zip(self._categories, self._full)
            ]
            out[i] = self._summary(per_category)
        return out


def _empty_result(coco_gt, image_ids: Sequence[int]) -> list[dict]:
    # pycocotools cannot load an empty result list; one zero-score box far outside every image changes nothing.
    return [{"image_id": image_ids[0], "category_id": coco_gt.getCatIds()[0], "bbox": [-1e6, -1e6, 1.0, 1.0], "score": 0.0}]


def jackknife_se(leave_one_out: np.ndarray) -> float:
    """Jackknife standard error from leave-one-out estimates."""
    values = np.asarray(leave_one_out, dtype=np.float64)
    values = values[np.isfinite(values)]
    n = len(values)
    if n < 2:
        return float("nan")
    return float(np.sqrt((n - 1) / n * np.sum((values - values.mean()) ** 2)))


# ------------------------------------------------------------------------------------------- fidelity


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def count_lost_added(reference: Sequence[Detection], other: Sequence[Detection], iou: float = 0.5) -> tuple[int, int]:
    """Greedy same-class matching (highest score first, IoU >= iou): (reference boxes unmatched, other boxes unmatched)."""
    lost = added = 0
    for class_id in {d.class_id for d in reference} | {d.class_id for d in other}:
        ref = sorted((d for d in reference if d.class_id == class_id), key=lambda d: -d.score)
        oth = sorted((d for d in other if d.class_id == class_id), key=lambda d: -d.score)
        if not ref or not oth:
            lost, added = lost + len(ref), added + len(oth)
            continue
        ious = _iou(np.array([[d.x1, d.y1, d.x2, d.y2] for d in ref]), np.array([[d.x1, d.y1, d.x2, d.y2] for d in oth]))
        taken = np.zeros(len(oth), dtype=bool)
        for r in range(len(ref)):
            candidates = np.where(~taken & (ious[r] >= iou))[0]
            if len(candidates):
                taken[candidates[np.argmax(ious[r, candidates])]] = True
            else:
                lost += 1
        added += int(np.count_nonzero(~taken))
    return lost, added


def fidelity_ap50(
    reference: Mapping[int, Sequence[Detection]], other: Mapping[int, Sequence[Detection]], num_classes: int
) -> float:
    """AP50 of `other` when the reference model's detections are the ground truth (NaN if it found nothing)."""
    from pycocotools.coco import COCO

    images = sorted(reference)
    annotations = [
        {"id": n + 1, "image_id": image_id, "category_id": d.class_id + 1, "iscrowd": 0,
         "bbox": [d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1], "area": (d.x2 - d.x1) * (d.y2 - d.y1)}
        for n, (image_id, d) in enumerate((i, d) for i in images for d in reference[i])
    ]
    if not annotations:
        return float("nan")
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in images], "annotations": annotations,
                  "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    with _quiet():
        gt.createIndex()
    results = to_coco_results({i: other.get(i, []) for i in images}, list(range(1, num_classes + 1)))
    return PerImageAP(gt, results, images).ap()[1]
