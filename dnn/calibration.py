"""Activation statistics at a cut over a folder of calibration images, and fidelity against the unsplit model.

`collect_calibration` runs preprocess + head on every image and keeps, per tensor that crosses the
cut, a fixed-size random sample of its values (for clip ranges and quantizer design) and the head
outputs of the first images with the unsplit model's results on them (for accuracy-driven search).
Memory is bounded by `sample_size` and `keep_images`, never by the folder's size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from splitinfer.codec.errors import CodecError
from splitinfer.dnn.errors import ModelError
from splitinfer.dnn.eval_coco import count_lost_added
from splitinfer.dnn.eval_images import image_files, read_image
from splitinfer.dnn.results import Detection

if TYPE_CHECKING:
    from splitinfer.codec import CodecProfile, Quantizer
    from splitinfer.codec.clip_range import ValueHistogram
    from splitinfer.dnn.model import SplitModel

DEFAULT_SAMPLE_SIZE = 2_000_000


class ProfileMismatchError(CodecError):
    """A codec profile was made for another model or cut than the one it is used with."""


def check_profile_matches(profile: CodecProfile, model: str, cut: str | int) -> None:
    """Refuse a profile calibrated for another model or cut (its clip range and levels would be wrong).

    A profile with no model or cut (hand-written, not calibrated) matches anything.
    """
    cut = str(cut).removeprefix("layer")
    field_name = profile.mismatch(model, cut)
    if field_name is not None:
        recorded = getattr(profile, field_name)
        value = {"model": model, "cut": cut}[field_name]
        raise ProfileMismatchError(
            f"the codec profile was calibrated for {field_name} {recorded!r} but is used with {field_name} "
            f"{value!r} (profile: model {profile.model!r}, cut {profile.cut!r}); run `splitinfer calibrate "
            f"--model {model} --cut {cut}` or pick the profile made for this model and cut."
        )


@dataclass
class TensorSample:
    """A bounded, uniformly drawn sample of one tensor's values over all calibration images."""

    name: str
    shape: tuple[int, ...]
    values: np.ndarray
    channels: np.ndarray  # channel index of each sampled value
    seen: int  # values offered to the sample


@dataclass
class KeptImage:
    """One calibration image's head outputs and the unsplit model's result on it."""

    file: str
    tensors: dict[str, np.ndarray]  # (1, C, H, W) float32
    info: Any
    reference: list


@dataclass
class Calibration:
    """Everything calibration measured at one cut of one model."""

    model: str
    cut: str
    files: list[str]
    samples: dict[str, TensorSample]
    kept: list[KeptImage] = field(default_factory=list)


def calibration_images(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """The images in `folder` (sorted by name); a missing or image-less folder is a ModelError."""
    path = Path(folder)
    if not path.is_dir():
        raise ModelError(f"calibration folder {path} does not exist: pass --data with a folder of images.")
    files = image_files(path)
    if not files:
        raise ModelError(f"no images in {path}: calibration needs a folder of pictures (.jpg, .png, ...).")
    return files[:limit] if limit is not None else files


def collect_calibration(
    model: SplitModel,
    cut: str | int,
    folder: str | os.PathLike,
    *,
    max_images: int | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    keep_images: int = 80,
    seed: int = 0,
    progress: bool = True,
) -> Calibration:
    """Run the head of `model` at `cut` over the images in `folder` and keep bounded statistics.

    Each tensor's sample holds up to `sample_size` values, drawn evenly from every image; the
    first `keep_images` images keep their head outputs and unsplit results for fidelity search.
    """
    import torch
    from tqdm import tqdm

    if sample_size < 1 or keep_images < 0:
        raise ModelError(f"sample_size must be >= 1 and keep_images >= 0, got {sample_size} and {keep_images}.")
    split = model.split(cut)
    files = calibration_images(folder, max_images)
    rng = np.random.default_rng(seed)
    per_image = {spec.name: max(1, sample_size // len(files)) for spec in split.tensors}
    values: dict[str, list[np.ndarray]] = {spec.name: [] for spec in split.tensors}
    channels: dict[str, list[np.ndarray]] = {spec.name: [] for spec in split.tensors}
    seen = dict.fromkeys(values, 0)
    kept: list[KeptImage] = []
    for index, path in enumerate(tqdm(files, desc=f"calibrating {model.name} cut {split.cut}", disable=not progress)):
        x, info = model.preprocess(read_image(path))
        with torch.no_grad():
            tensors = {name: t.float().numpy() for name, t in split.head(x).items()}
        for spec in split.tensors:
            flat = tensors[spec.name].reshape(-1)
            take = rng.choice(flat.size, size=min(per_image[spec.name], flat.size), replace=False)
            values[spec.name].append(flat[take].copy())
            channels[spec.name].append((take // int(np.prod(spec.shape[1:]))).astype(np.int32))
            seen[spec.name] += flat.size
        if index < keep_images:
            reference = model.postprocess(model.forward(x), info)
            kept.append(KeptImage(path.name, tensors, info, reference))
    samples = {
        spec.name: TensorSample(spec.name, tuple(spec.shape), np.concatenate(values[spec.name]),
                                np.concatenate(channels[spec.name]), seen[spec.name])
        for spec in split.tensors
    }
    return Calibration(model.name, split.cut, [p.name for p in files], samples, kept)


def channel_sensitivity(model: SplitModel, calibration: Calibration, images: int = 16) -> dict[str, np.ndarray]:
    """Tensor name -> per-channel mean squared gradient of the tail's scores, over the first `images` kept images,
    normalized to mean 1: how much an error in each channel matters to the tail (RDO quantization's weights).

    Scores: detectors sum sigmoid(objectness) x the best sigmoid class probability over every YOLO anchor and cell;
    classifiers the best softmax probability."""
    import torch

    split = model.split(calibration.cut)
    sums: dict[str, np.ndarray] = {}
    for kept in calibration.kept[:images]:
        leaves = {name: torch.from_numpy(np.ascontiguousarray(t)).float().requires_grad_(True)
                  for name, t in kept.tensors.items()}
        outputs = split.tail(leaves, grad=True)
        _tail_score(model, outputs).backward()
        for name, leaf in leaves.items():
            g = leaf.grad.double().numpy()  # type: ignore[union-attr]  # set by backward
            g = g.reshape(g.shape[0], g.shape[1], -1) if g.ndim > 2 else g.reshape(g.shape[0], -1, 1)
            sums[name] = sums.get(name, 0) + (g ** 2).mean(axis=(0, 2))
    if not sums:
        raise ModelError("channel sensitivity needs at least one kept calibration image.")
    return {name: s / s.mean() if s.mean() > 0 else np.ones_like(s) for name, s in sums.items()}


def _tail_score(model: SplitModel, outputs: Any):
    import torch

    if model.task != "detection":
        logits = outputs if isinstance(outputs, torch.Tensor) else torch.as_tensor(outputs)
        return torch.softmax(logits, dim=-1).amax(dim=-1).sum()
    per_anchor = 5 + len(model.class_names)
    score = torch.zeros(())
    for out in outputs:
        b, k, h, w = out.shape
        out = out.view(b, k // per_anchor, per_anchor, h, w)
        score = score + (torch.sigmoid(out[:, :, 4]) * torch.sigmoid(out[:, :, 5:]).amax(2)).sum()
    return score


def result_changes(reference: Sequence, result: Sequence) -> tuple[int, int]:
    """(lost, added) between two results of one image: detections matched by class and IoU >= 0.5,
    class scores by their top-1 class."""
    if any(isinstance(r, Detection) for r in (*reference, *result)):
        return count_lost_added(reference, result)
    if reference and result and reference[0].class_id == result[0].class_id:
        return 0, 0
    return int(bool(reference)), int(bool(result))


def fidelity_loss(
    model: SplitModel,
    calibration: Calibration,
    roundtrip: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
) -> float:
    """Mean results lost + added per kept image when the tensors at the cut go through `roundtrip`."""
    if not calibration.kept:
        raise ModelError("fidelity needs kept calibration images: collect with keep_images > 0.")
    split = model.split(calibration.cut)
    changes = 0
    for image in calibration.kept:
        outputs = split.tail(dict(roundtrip(image.tensors)))
        lost, added = result_changes(image.reference, model.postprocess(outputs, image.info))
        changes += lost + added
    return changes / len(calibration.kept)


CLIP_METHODS = ("percentile", "mse", "search")
SEARCH_SCALES = (1.0, 0.8, 1.25, 1.5, 2.0, 2.5)


@dataclass(frozen=True)
class QuantizerChoice:
    """What calibration chose for one tensor: the quantizer and the figures it was chosen on."""

    quantizer: Quantizer
    figures: dict[str, Any]


def design_quantizer(
    sample: np.ndarray | ValueHistogram,
    levels: int,
    clip_min: float,
    clip_max: float,
    *,
    kind: str = "uniform",
    lam: float = 1.0,
    weight_power: float = 0.0,
) -> Quantizer:
    """A uniform or modified-ECSQ quantizer for the range, designed on the calibration sample."""
    from splitinfer.codec.ecsq import design_ecsq
    from splitinfer.codec.quantizer import Quantizer

    if kind == "uniform":
        return Quantizer.uniform(clip_min, clip_max, levels)
    if kind == "ecsq":
        return design_ecsq(sample, levels, clip_min, clip_max, lam=lam, weight_power=weight_power).quantizer
    raise ModelError(f"unknown quantizer kind {kind!r}: use uniform or ecsq.")


def choose_quantizer(
    model: SplitModel,
    calibration: Calibration,
    *,
    levels: int,
    kind: str = "uniform",
    lam: float = 1.0,
    weight_power: float = 0.0,
    clip: str = "search",
    percentile: float = 99.99,
    symmetric: bool = False,
    scale: float = 1.0,
) -> QuantizerChoice:
    """Clip range + quantizer for a single-tensor cut, by percentile, MSE or fidelity (tail) search.

    `scale` stretches the percentile or MSE-optimal range (the search then centres on the stretched one).
    """
    from splitinfer.codec.clip_range import (
        ClipRange,
        ValueHistogram,
        mse_optimal_range,
        percentile_range,
        scaled_candidates,
        search_range,
    )

    if len(calibration.samples) != 1:
        names = ", ".join(calibration.samples)
        raise ModelError(f"cut {calibration.cut} sends {len(calibration.samples)} tensors ({names}); a codec profile "
                         "holds one quantizer, so calibrate a cut that sends one tensor.")
    if clip not in CLIP_METHODS:
        raise ModelError(f"unknown clip method {clip!r}: use one of {', '.join(CLIP_METHODS)}.")
    (sample,) = calibration.samples.values()
    hist = ValueHistogram.of(sample.values)
    if clip == "percentile":
        chosen = percentile_range(hist, 100.0 - percentile, percentile)
    else:
        chosen = mse_optimal_range(hist, levels, symmetric=symmetric)
    if not (math.isfinite(scale) and scale > 0):
        raise ModelError(f"the clip-range scale must be a positive number, got {scale}.")
    if scale != 1.0:
        chosen = ClipRange(chosen.clip_min * scale, chosen.clip_max * scale, f"{chosen.method} x {scale:g}")
    figures: dict[str, Any] = {"calibration_images": len(calibration.files), "clip_method": chosen.method}

    def design(lo: float, hi: float):
        return design_quantizer(hist, levels, lo, hi, kind=kind, lam=lam, weight_power=weight_power)

    def roundtrip_with(quantizer) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
        return lambda tensors: {k: quantizer.dequantize(quantizer.quantize(v)) for k, v in tensors.items()}

    if clip == "search":
        candidates = scaled_candidates(chosen, SEARCH_SCALES)
        losses: dict[str, float] = {}

        def loss(lo: float, hi: float) -> float:
            value = fidelity_loss(model, calibration, roundtrip_with(design(lo, hi)))
            losses[f"{lo:.4g}..{hi:.4g}"] = value
            return value

        chosen = search_range(loss, candidates, f"fidelity search around {chosen.method}")
        figures["search_changes_per_image"] = losses
    quantizer = design(chosen.clip_min, chosen.clip_max)
    figures["clip_method"] = chosen.method
    figures["calibration_mse"] = hist.mse(quantizer)
    indices = quantizer.quantize(sample.values)
    p = np.bincount(indices, minlength=quantizer.levels) / indices.size
    figures["level_probabilities"] = [round(float(v), 6) for v in p]
    figures["entropy_bits_per_element"] = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    if calibration.kept:
        figures["changes_per_image"] = fidelity_loss(model, calibration, roundtrip_with(quantizer))
    return QuantizerChoice(quantizer, figures)
