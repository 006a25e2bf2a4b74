"""Accuracy of a split model with and without the codec at its cut, paired on the same images.

Detection: COCO AP / AP50 (pycocotools) on a COCO-format folder, the jackknife standard error of the
paired difference, and fidelity to the uncompressed model (its detections as ground truth) on any
folder or video. Classification: top-1 / top-5 on a folder with labels.csv. Rates are real coded bytes.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from splitinfer.codec import CodecProfile
from splitinfer.dnn.errors import ModelError
from splitinfer.dnn.eval_codec import SequenceRoundtrip
from splitinfer.dnn.eval_coco import PerImageAP, count_lost_added, fidelity_ap50, jackknife_se, to_coco_results
from splitinfer.dnn.eval_images import Frame, iter_folder
from splitinfer.dnn.model import SplitModel
from splitinfer.dnn.preprocess import PreprocessInfo
from splitinfer.dnn.results import Detection
from splitinfer.dnn.yolo_postprocess import EVAL_SCORE_THRESHOLD, LIVE_SCORE_THRESHOLD, NMS_IOU_THRESHOLD


# Another path from a source image to the model's outputs (a partition that is not a cut: pixels through a video
# codec): image -> (outputs, the info that maps them to the image, bytes sent). Given by the caller, so that dnn
# does not depend on the codecs of the services.
Candidate = Callable[[np.ndarray], tuple[Any, PreprocessInfo, int]]


@dataclass
class CodedOutputs:
    """The model outputs of one frame without and with the codec, and the coded size."""

    key: str
    reference: Any
    compressed: Any
    coded_bytes: int
    info: PreprocessInfo
    compressed_info: PreprocessInfo | None = None  # a candidate's own mapping (None: `info`)


def run_paired(model: SplitModel, frames: Iterable[Frame], cut: str, profile: CodecProfile | None,
               skipped: list[str], *, progress: bool = False, total: int | None = None,
               candidate: Candidate | None = None) -> Iterable[CodedOutputs]:
    """For each decodable frame: head, tail on the exact tensors, tail on the codec round trip (or, with a
    candidate, the candidate's outputs instead of the codec's).

    progress: a tqdm bar on stderr (`total` frames when known).
    """
    from tqdm import tqdm

    split = model.split(cut)
    roundtrip = SequenceRoundtrip(profile) if profile is not None else None
    for frame in tqdm(frames, total=total, desc=f"evaluating {model.name} cut {split.cut}", unit="image",
                      disable=not progress, dynamic_ncols=True):
        if frame.image is None:
            skipped.append(frame.error or f"{frame.key}: not decodable")
            continue
        try:
            x, info = model.preprocess(frame.image)
        except ModelError as exc:
            skipped.append(f"{frame.key}: {exc}")
            continue
        sent = split.head(x)
        reference = split.tail(sent)
        if candidate is not None:
            compressed, compressed_info, coded = candidate(frame.image)
            yield CodedOutputs(frame.key, reference, compressed, coded, info, compressed_info)
            continue
        if roundtrip is None:
            compressed, coded = reference, sum(4 * t.numel() for t in sent.values())
        else:
            decoded, coded = roundtrip({k: v[0].numpy() for k, v in sent.items()})
            compressed = split.tail({k: torch.from_numpy(v[None]) for k, v in decoded.items()})
        yield CodedOutputs(frame.key, reference, compressed, coded, info)


@dataclass
class _Report:
    """What the report dataclasses share: to_dict gives JSON-ready data, None for a NaN (a figure that does not apply)."""

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


@dataclass
class DetectionReport(_Report):
    """Everything `splitinfer eval` prints for a detector; NaN where a figure does not apply."""

    model: str
    cut: str
    codec: str
    images: int
    skipped: list[str] = field(default_factory=list)
    ap: float = math.nan
    ap50: float = math.nan
    ap_ref: float = math.nan
    ap50_ref: float = math.nan
    ap_delta: float = math.nan
    ap50_delta: float = math.nan
    ap_delta_se: float = math.nan
    ap50_delta_se: float = math.nan
    ap50_ref_se: float = math.nan
    fidelity_ap50: float = math.nan
    detections_ref: int = 0
    detections_lost: int = 0
    detections_added: int = 0
    # Standard error of lost + added: block jackknife over CHANGE_BLOCK_FRAMES consecutive frames (neighbouring
    # video frames are not independent); NaN with fewer than two blocks.
    detections_changed_se: float = math.nan
    bits_per_element: float = math.nan
    bytes_per_frame: float = math.nan
    elements_per_frame: int = 0
    score_threshold: float = EVAL_SCORE_THRESHOLD
    live_score_threshold: float = LIVE_SCORE_THRESHOLD
    iou_threshold: float = NMS_IOU_THRESHOLD


CHANGE_BLOCK_FRAMES = 30


def block_se(per_frame: list[int] | np.ndarray, block: int = CHANGE_BLOCK_FRAMES) -> float:
    """Standard error of a per-frame count's total, by the jackknife over blocks of `block` consecutive frames."""
    values = np.asarray(per_frame, dtype=float)
    totals = np.array([values[i:i + block].sum() for i in range(0, len(values), block)])
    if len(totals) < 2:
        return math.nan
    return float(totals.std(ddof=1) * math.sqrt(len(totals)))  # the jackknife's of a sum, in closed form


def coco_annotations_for(folder: Path) -> Path | None:
    """COCO layout: <root>/<split>/ images and <root>/annotations/instances_<split>.json."""
    candidate = folder.parent / "annotations" / f"instances_{folder.name}.json"
    return candidate if candidate.is_file() else None


def evaluate_detection(
    model: SplitModel,
    frames: Iterable[Frame],
    *,
    cut: str | None = None,
    profile: CodecProfile | None = None,
    annotations: str | os.PathLike | None = None,
    codec_name: str = "none",
    score_threshold: float = EVAL_SCORE_THRESHOLD,
    live_score_threshold: float = LIVE_SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU_THRESHOLD,
    progress: bool = False,
    total: int | None = None,
    candidate: Candidate | None = None,
) -> DetectionReport:
    """Paired evaluation: COCO AP if `annotations` is given (frames keyed by file name), fidelity always.

    With a candidate (another partition than features) it replaces the codec at the cut; the rate is its bytes."""
    if model.task != "detection":
        raise ModelError(f"{model.name} is a {model.task} model; detection evaluation needs a detector.")
    cut = model.default_cut if cut is None else str(cut)
    split = model.split(cut)
    coco_gt, ids_by_name = _load_coco(annotations) if annotations is not None else (None, {})
    skipped: list[str] = []
    reference: dict[int, list[Detection]] = {}
    compressed: dict[int, list[Detection]] = {}
    coded_total = 0
    compressing = profile is not None or candidate is not None
    for n, out in enumerate(run_paired(model, frames, cut, profile, skipped, progress=progress, total=total,
                                       candidate=candidate)):
        image_id = ids_by_name.get(out.key, n) if coco_gt is not None else n
        if coco_gt is not None and out.key not in ids_by_name:
            skipped.append(f"{out.key}: not in {annotations}")
            continue
        kwargs: dict[str, Any] = dict(score_threshold=score_threshold, iou_threshold=iou_threshold)
        # A detector's postprocess gives Detections (the task is checked above).
        reference[image_id] = cast(list[Detection], model.postprocess(out.reference, out.info, **kwargs))
        compressed[image_id] = reference[image_id] if not compressing else cast(
            list[Detection], model.postprocess(out.compressed, out.compressed_info or out.info, **kwargs))
        coded_total += out.coded_bytes
    report = DetectionReport(model.name, split.cut, codec_name, len(reference), skipped,
                             score_threshold=score_threshold, live_score_threshold=live_score_threshold,
                             iou_threshold=iou_threshold, elements_per_frame=0 if candidate else split.numel)
    if not reference:
        return report
    report.bytes_per_frame = coded_total / len(reference)
    if candidate is None:  # a candidate sends no tensor: bits per element do not apply
        report.bits_per_element = 8 * report.bytes_per_frame / split.numel
    live = {i: [d for d in dets if d.score >= live_score_threshold] for i, dets in reference.items()}
    live_other = {i: [d for d in dets if d.score >= live_score_threshold] for i, dets in compressed.items()}
    report.detections_ref = sum(len(d) for d in live.values())
    changes = []
    for i in live:
        lost, added = count_lost_added(live[i], live_other[i])
        report.detections_lost += lost
        report.detections_added += added
        changes.append(lost + added)
    report.detections_changed_se = block_se(changes)
    report.fidelity_ap50 = fidelity_ap50(live, compressed, len(model.class_names))
    if coco_gt is not None:
        category_ids = sorted(coco_gt.getCatIds())
        if len(category_ids) != len(model.class_names):
            raise ModelError(f"{annotations} has {len(category_ids)} categories; {model.name} predicts {len(model.class_names)}.")
        image_ids = sorted(reference)
        ref_ap = PerImageAP(coco_gt, to_coco_results(reference, category_ids), image_ids)
        report.ap_ref, report.ap50_ref = ref_ap.ap()
        ref_loo = ref_ap.leave_one_out()
        report.ap50_ref_se = jackknife_se(ref_loo[:, 1])
        if not compressing:
            report.ap, report.ap50, report.ap_delta, report.ap50_delta = report.ap_ref, report.ap50_ref, 0.0, 0.0
            report.ap_delta_se = report.ap50_delta_se = 0.0
        else:
            comp_ap = PerImageAP(coco_gt, to_coco_results(compressed, category_ids), image_ids)
            report.ap, report.ap50 = comp_ap.ap()
            report.ap_delta, report.ap50_delta = report.ap - report.ap_ref, report.ap50 - report.ap50_ref
            delta_loo = comp_ap.leave_one_out() - ref_loo
            report.ap_delta_se = jackknife_se(delta_loo[:, 0])
            report.ap50_delta_se = jackknife_se(delta_loo[:, 1])
    return report


def _load_coco(annotations: str | os.PathLike):
    from pycocotools.coco import COCO

    from splitinfer.dnn.eval_coco import _quiet

    path = Path(annotations)
    try:
        with _quiet():
            coco = COCO(str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read the COCO annotations {path}: {exc}; pass a COCO instances_*.json file.") from exc
    return coco, {img["file_name"]: img["id"] for img in coco.dataset.get("images", [])}


# -------------------------------------------------------------------------------------- classification


@dataclass
class ClassificationReport(_Report):
    model: str
    cut: str
    codec: str
    images: int
    skipped: list[str] = field(default_factory=list)
    top1: float = math.nan
    top5: float = math.nan
    top1_ref: float = math.nan
    top5_ref: float = math.nan
    top1_delta: float = math.nan
    top1_delta_se: float = math.nan
    top1_agreement: float = math.nan  # fidelity: compressed top-1 equals the uncompressed top-1
    bits_per_element: float = math.nan
    bytes_per_frame: float = math.nan
    elements_per_frame: int = 0


def read_labels(folder: Path) -> dict[str, int]:
    """labels.csv (file, class_index, ...) -> {file: class index}."""
    path = folder / "labels.csv"
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
        return {row["file"]: int(row["class_index"]) for row in rows}
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}; it needs the columns file,class_index.") from exc


def evaluate_classification(
    model: SplitModel, folder: str | os.PathLike, *, cut: str | None = None, profile: CodecProfile | None = None,
    codec_name: str = "none", limit: int | None = None, progress: bool = False,
) -> ClassificationReport:
    """Top-1 / top-5 with and without the codec, paired on the images of labels.csv."""
    if model.task != "classification":
        raise ModelError(f"{model.name} is a {model.task} model; labels.csv evaluation needs a classifier.")
    folder = Path(folder)
    labels = read_labels(folder)
    names = sorted(labels)[:limit]
    cut = model.default_cut if cut is None else str(cut)
    split = model.split(cut)
    skipped: list[str] = []
    rows, coded_total = [], 0
    for out in run_paired(model, iter_folder(folder, names), cut, profile, skipped, progress=progress,
                          total=len(names)):
        truth = labels[out.key]
        ref5 = out.reference[0].topk(5).indices.tolist()
        comp5 = out.compressed[0].topk(5).indices.tolist()
        rows.append((ref5[0] == truth, truth in ref5, comp5[0] == truth, truth in comp5, comp5[0] == ref5[0]))
        coded_total += out.coded_bytes
    report = ClassificationReport(model.name, split.cut, codec_name, len(rows), skipped, elements_per_frame=split.numel)
    if not rows:
        return report
    r = np.asarray(rows, dtype=np.float64)
    report.top1_ref, report.top5_ref, report.top1, report.top5, report.top1_agreement = r.mean(axis=0)
    diff = r[:, 2] - r[:, 0]
    report.top1_delta = float(diff.mean())
    report.top1_delta_se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
    report.bytes_per_frame = coded_total / len(rows)
    report.bits_per_element = 8 * report.bytes_per_frame / split.numel
    return report
