"""The scene probe of `--partition auto`: measure the candidate partitions on the first K frames of this source.

The shipped partition curves were measured on one calibration scene; a crowd sends more detection bytes and a
textured scene may favour pixels over features. As Chameleon (Jiang et al., SIGCOMM 2018) profiles configurations
on the live feed against a golden one, the probe runs the unsplit model once per frame as the reference and each
partition that fits the edge budget through its real round trip (services/edge/partitions.py, as `splitinfer eval
--partition P` runs it) at the rate the plan would give it, counting eval's detection changes (lost + added) and
bytes per frame. `choose` then corrects the curves with what it measured and plans on them, under the rule in
docs/PARTITIONS.md ("The scene probe"): leave the curves' choice only when the probe resolves the difference.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitinfer.errors import ConfigError
from splitinfer.services.edge.partition_plan import RATED, PartitionCurves, Plan, plan

log = logging.getLogger("splitinfer.edge")

# K: one key-frame interval of the pixels partition (a key frame every 30): a shorter probe would weigh the key
# frame's bytes and quality more than a stream does. Chosen before any report video ran (docs/PARTITIONS.md).
DEFAULT_PROBE_FRAMES = 30
# The probe overrides the curves' choice only when its paired difference exceeds this many standard errors (the
# rule fixed on the selection videos; docs/PARTITIONS.md says what 2 did on the report videos).
OVERRIDE_SE = 1.0
# The probe's paired differences: SE by the block jackknife over blocks of this many frames (6 blocks at K = 30;
# below 2 blocks there is no SE and the probe corrects only the detections' rate).
PROBE_BLOCK_FRAMES = 5


def check_probe_frames(value: Any, flag: str = "--probe-frames") -> int:
    """K as given (flag, environment or code): a whole number >= 0, else a ConfigError saying so."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(f"{flag} must be a whole number of frames >= 0 (0: plan from the curves alone), got "
                              f"{value!r}.") from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{flag} must be a whole number of frames >= 0 (0: plan from the curves alone), got "
                          f"{value!r}.")
    return int(value)


def probe_frames_option(text: str) -> int:
    """The cast of the --probe-frames flag and SPLITINFER_PROBE_FRAMES."""
    return check_probe_frames(text)


def read_probe_frames(path: str | os.PathLike, frames: int, *, step: int = 1) -> list[np.ndarray]:
    """The first `frames` decodable frames of a video file or image folder (every `step`-th), for the probe;
    ConfigError when the source has fewer."""
    from splitinfer.dnn.eval_images import iter_source

    if frames == 0:
        return []
    images = [f.image for f in iter_source(path, step=step, limit=frames, on_truncated=lambda _: None)
              if f.image is not None]
    if len(images) < frames:
        raise ConfigError(f"{path} has {len(images)} decodable frame(s), fewer than the {frames} the scene probe of "
                          "--partition auto measures: lower --probe-frames (0: plan from the curves alone).")
    return images


def live_detections(model: Any, outputs: Any, info: Any) -> list:
    """The detections `splitinfer eval` counts: postprocess at its score and NMS thresholds, then the live score
    threshold."""
    from splitinfer.dnn.yolo_postprocess import EVAL_SCORE_THRESHOLD, LIVE_SCORE_THRESHOLD, NMS_IOU_THRESHOLD

    found = model.postprocess(outputs, info, score_threshold=EVAL_SCORE_THRESHOLD, iou_threshold=NMS_IOU_THRESHOLD)
    return [d for d in found if d.score >= LIVE_SCORE_THRESHOLD]


def changes_and_bytes(model: Any, candidate: Any, images: Iterable[np.ndarray], references: Iterable[list]
                      ) -> tuple[list[int], list[int]]:
    """Per frame of a round trip (services/edge/partitions.py) over `images`: eval's detection changes (lost + added
    against that frame's `references`) and the bytes it sent."""
    import torch

    from splitinfer.dnn.eval_coco import count_lost_added

    changes, sizes = [], []
    with torch.no_grad():
        for image, expected in zip(images, references):
            outputs, info, coded = candidate(image)
            changes.append(sum(count_lost_added(expected, live_detections(model, outputs, info))))
            sizes.append(coded)
    return changes, sizes


@dataclass(frozen=True)
class ProbedPartition:
    """One partition's round trip on the probe's frames: detection changes and bytes per frame."""

    partition: str
    rate_kbps: float | None  # the rate it was told to hold (None: detections)
    changes: tuple[int, ...]
    bytes: tuple[int, ...]
    fps: float
    cpu_s: float  # the round trip's CPU time (edge and cloud side) on the probe's frames

    @property
    def changes_per_frame(self) -> float:
        return float(np.mean(self.changes))

    @property
    def kbps(self) -> float:
        return 8 * float(np.mean(self.bytes)) * self.fps / 1000

    @property
    def kbps_upper(self) -> float:
        """The measured rate plus one SE (block jackknife; the mean alone when the probe is too short for one)."""
        se = block_se(self.bytes) / len(self.bytes)
        return 8 * (float(np.mean(self.bytes)) + (0.0 if math.isnan(se) else se)) * self.fps / 1000


def block_se(values: Sequence[float] | np.ndarray) -> float:
    from splitinfer.dnn.evaluation import block_se as jackknife

    return jackknife(np.asarray(values, dtype=float), PROBE_BLOCK_FRAMES)


@dataclass(frozen=True)
class SceneProbe:
    """What the probe measured on its frames, what it cost, and (once `choose` ran) why auto chose as it did."""

    frames: int
    probed: Mapping[str, ProbedPartition]
    cpu_s: float
    wall_s: float
    why: str = ""


def describe(probe: SceneProbe, why: str = "") -> str:
    """One line for the log and the demo: the probe's length, cost, measurements and the reason of the choice."""
    measured = "; ".join(f"{r.partition} {r.changes_per_frame:.2f} changes/frame at {r.kbps:.1f} kbit/s"
                         for r in probe.probed.values())
    return (f"scene probe of {probe.frames} frames took {probe.wall_s:.1f} s ({probe.cpu_s:.1f} s of CPU: the whole "
            f"model once per frame as the reference, then {', '.join(probe.probed) or 'no partition'}; a one-off "
            f"start-up cost outside --edge-budget-ms): {measured}; {why or probe.why}")


def measure(model: Any, images: Sequence[np.ndarray], wanted: Mapping[str, float | None], *, fps: float,
            pixel_settings: Any, ladder: Any, cache: dict[Any, Any] | None = None) -> SceneProbe:
    """Run the reference and each wanted partition (name -> the rate it holds) over `images`. `cache`: results of
    earlier probes of the same images (a bench probes many budgets of one clip; a round trip is deterministic)."""
    import torch

    from splitinfer.services.edge.partitions import DetectionsRoundtrip, round_trip

    cache = {} if cache is None else cache
    started, started_cpu = time.monotonic(), time.process_time()
    with torch.no_grad():
        if "reference" not in cache:  # the unsplit model, which is also the detections partition's round trip
            reference = DetectionsRoundtrip(model)
            outputs = [reference(image) for image in images]
            cache["reference"] = [live_detections(model, out, info) for out, info, _ in outputs]
            cache["detections", None] = ProbedPartition("detections", None, tuple(0 for _ in images),
                                                        tuple(coded for _, _, coded in outputs), fps,
                                                        reference.encode_cpu_s)
        references = cache["reference"]
        probed = {}
        for name, rate in wanted.items():
            key = (name, None if name == "detections" else rate)
            if key not in cache:
                candidate_started = time.process_time()
                candidate, _ = round_trip(model, name, rate, pixel_settings=pixel_settings, ladder=ladder, fps=fps)
                changes, sizes = changes_and_bytes(model, candidate, images, references)
                cache[key] = ProbedPartition(name, rate, tuple(changes), tuple(sizes), fps,
                                             time.process_time() - candidate_started)
            probed[name] = cache[key]
    return SceneProbe(len(images), probed, time.process_time() - started_cpu, time.monotonic() - started)


def _feasible(curves: PartitionCurves, costs: Mapping[str, float], partition: str, **budgets: float) -> Plan | None:
    try:
        return plan(curves, costs, partitions=[partition], **budgets)
    except ConfigError:
        return None


def corrected_curves(curves: PartitionCurves, probe: SceneProbe, predicted: Mapping[str, Plan]) -> PartitionCurves:
    """The curves through the probed points: a rated partition's changes offset by (probed - predicted at the
    probed rate), floored at 0; the detections' rate replaced by the probed one plus one SE."""
    offsets = {name: run.changes_per_frame - predicted[name].predicted_changes_per_frame
               for name, run in probe.probed.items() if name in RATED and name in predicted}
    points = []
    for point in curves.points:
        run = probe.probed.get(point.partition)
        if point.partition in offsets:
            offset = offsets[point.partition]
            point = dataclasses.replace(point, changes_per_frame=max(0.0, point.changes_per_frame + offset),
                                        setting=f"{point.setting} {offset:+.2f} by the scene probe")
        elif run is not None and point.partition == "detections":
            point = dataclasses.replace(point, kbps=run.kbps_upper, setting=f"{point.setting}, rate by the scene probe")
        points.append(point)
    return dataclasses.replace(curves, points=tuple(points),
                              video=f"{curves.video}; corrected by a {probe.frames}-frame scene probe")


def choose(curves: PartitionCurves, costs: Mapping[str, float], probe: SceneProbe, *, uplink_kbps: float,
           edge_budget_ms: float, partitions: Iterable[str]) -> tuple[Plan, PartitionCurves, str]:
    """The plan on the probe-corrected curves, the corrected curves and why. The rule: take the corrected curves'
    choice when the curves' own choice no longer fits (detections over the uplink), or when the probe's paired
    difference (curves' choice - corrected choice, changes summed over the probe) exceeds OVERRIDE_SE standard
    errors; else keep the curves' choice (a difference K frames cannot resolve). NoFeasiblePlan when nothing fits the measured rates."""
    allowed = tuple(partitions)
    budgets = dict(uplink_kbps=uplink_kbps, edge_budget_ms=edge_budget_ms)
    calibrated = plan(curves, costs, partitions=allowed, **budgets)
    predicted = {name: p for name in probe.probed if (p := _feasible(curves, costs, name, **budgets)) is not None}
    corrected = corrected_curves(curves, probe, predicted)
    best = plan(corrected, costs, partitions=allowed, **budgets)
    if best.partition == calibrated.partition:
        return best, corrected, "the probe agrees with the curves"
    staying = _feasible(corrected, costs, calibrated.partition, **budgets)
    if staying is None:
        run = probe.probed[calibrated.partition]
        return best, corrected, (f"{calibrated.partition} does not fit here: the probe measured {run.kbps:.1f} "
                                 f"kbit/s (+ one SE: {run.kbps_upper:.1f}) against {uplink_kbps:g}")
    difference = np.array(probe.probed[calibrated.partition].changes, float) - \
        np.array(probe.probed[best.partition].changes, float)
    se = block_se(difference)
    said = f"{calibrated.partition} - {best.partition} = {difference.sum():+.0f} ± {se:.1f} changes over the probe"
    if math.isfinite(se) and difference.sum() > OVERRIDE_SE * se:
        return best, corrected, f"the probe resolves it: {said}"
    return staying, corrected, f"the probe cannot resolve it ({said}): the curves' choice stays"


def candidates(curves: PartitionCurves, costs: Mapping[str, float], *, uplink_kbps: float, edge_budget_ms: float,
               partitions: Iterable[str]) -> dict[str, float | None]:
    """The partitions the probe measures: each allowed one that fits both budgets on the curves, with the rate the
    plan would give it (None: detections)."""
    budgets = dict(uplink_kbps=uplink_kbps, edge_budget_ms=edge_budget_ms)
    return {name: p.rate_kbps for name in partitions if name in curves.partitions
            and (p := _feasible(curves, costs, name, **budgets)) is not None}


def probe_and_choose(model: Any, images: Sequence[np.ndarray], curves: PartitionCurves, costs: Mapping[str, float], *,
                     uplink_kbps: float, edge_budget_ms: float, partitions: Iterable[str], fps: float,
                     pixel_settings: Any, ladder: Any, cache: dict[Any, Any] | None = None
                     ) -> tuple[Plan, PartitionCurves, SceneProbe]:
    """Probe every allowed partition that fits both budgets on the curves (at the rate the plan would give it),
    then `choose`; logs what the probe measured, what it cost and the choice."""
    allowed = tuple(partitions)
    budgets = dict(uplink_kbps=uplink_kbps, edge_budget_ms=edge_budget_ms)
    wanted = candidates(curves, costs, partitions=allowed, **budgets)
    probe = measure(model, images, wanted, fps=fps, pixel_settings=pixel_settings, ladder=ladder, cache=cache)
    chosen, corrected, why = choose(curves, costs, probe, partitions=allowed, **budgets)
    probe = dataclasses.replace(probe, why=why)
    log.info("auto partition: %s", describe(probe))
    return chosen, corrected, probe
