"""Calibration of the partition curves: each partition's rate-fidelity points and CPU cost on a video.

Runs the real edge and cloud code of each partition in one process (services/edge/partitions.py's round trips:
PixelRoundtrip, FeatureRoundtrip with rate control, DetectionsRoundtrip) through `splitinfer eval`'s paired
evaluation (dnn/evaluation.py), so a point's changes per frame are what `splitinfer eval --partition P
--rate-kbps R` reports on the same frames. `splitinfer calibrate-partitions` writes the result
(services/edge/partition_plan.py's PartitionCurves); the model ships one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from splitinfer.codec.ladder import CodecLadder
from splitinfer.services.edge.partition_plan import OperatingPoint, PartitionCurves
from splitinfer.services.pixels import PixelSettings, video_file_fps

DEFAULT_RATES_KBPS = (16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
DEFAULT_FRAMES = 150


def measure_point(model: Any, video: Path, candidate: Any, *, partition: str, target_kbps: float | None,
                  setting: str, cut: str, fps: float, step: int = 1, limit: int | None = DEFAULT_FRAMES,
                  progress: bool = False) -> tuple[OperatingPoint, float]:
    """One operating point (the candidate's rate and changes per frame on the video) and its edge CPU ms/frame."""
    from splitinfer.dnn.eval_images import iter_source
    from splitinfer.dnn.evaluation import evaluate_detection

    report = evaluate_detection(model, iter_source(video, step=step, limit=limit), cut=cut, candidate=candidate,
                                codec_name=setting, progress=progress)
    frames = max(report.images, 1)
    changes = report.detections_lost + report.detections_added
    point = OperatingPoint(partition, 8 * report.bytes_per_frame * fps / 1000, changes / frames, target_kbps,
                           report.detections_changed_se / frames, setting)
    return point, 1000 * candidate.encode_cpu_s / frames


def calibrate_partitions(model: Any, video: str | Path, ladder: CodecLadder, *,
                         rates_kbps: Sequence[float] = DEFAULT_RATES_KBPS, pixel_settings: PixelSettings = PixelSettings(),
                         step: int = 1, limit: int | None = DEFAULT_FRAMES, progress: bool = False,
                         on_point: Callable[[OperatingPoint, float], None] | None = None) -> PartitionCurves:
    """Pixels and features at each rate in `rates_kbps` (the bitrate the edge is told to hold, at the video's
    frame rate divided by `step`), and detections; edge costs are the mean CPU ms/frame of each partition."""
    from dataclasses import replace

    from splitinfer.services.edge.partitions import DetectionsRoundtrip, FeatureRoundtrip, PixelRoundtrip

    video = Path(video)
    fps = video_file_fps(str(video)) / step
    cut = str(ladder.cut)
    points: list[OperatingPoint] = []
    costs: dict[str, list[float]] = {"pixels": [], "features": [], "detections": []}

    def measure(partition: str, target: float | None, candidate: Any, setting: str) -> None:
        point, ms = measure_point(model, video, candidate, partition=partition, target_kbps=target, setting=setting,
                                  cut=cut, fps=fps, step=step, limit=limit, progress=progress)
        points.append(point)
        costs[partition].append(ms)
        if on_point is not None:
            on_point(point, ms)

    measure("detections", None, DetectionsRoundtrip(model), "detections (whole model on the edge)")
    for rate in rates_kbps:
        pixels = replace(pixel_settings, crf=None, target_kbps=rate)
        measure("pixels", rate, PixelRoundtrip(model, pixels, fps=fps),
                f"h264 {pixels.preset} zerolatency, key frame every {pixels.key_interval}, {pixels.size} size")
        measure("features", rate, FeatureRoundtrip(model, ladder, rate, fps=fps),
                f"cut {cut}, ladder of {len(ladder.points)} points, rate control")
    frames = f"first {limit} frames" if limit else "all frames"
    every = "" if step == 1 else f", every {step}th frame"
    return PartitionCurves(model.name, tuple(points), cut=cut,
                           edge_ms={name: sum(ms) / len(ms) for name, ms in costs.items() if ms},
                           video=f"{video.name} ({frames}{every}, {fps:g} frames/s)", frames=limit or 0, fps=fps)
