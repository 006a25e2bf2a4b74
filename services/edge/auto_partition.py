"""`--partition auto` on this edge: measure what each partition costs here, then plan within the budgets.

The start-up measurement codes a few frames of a textured test picture through each partition's real edge code
(PixelPipeline's resize and H.264, EdgePipeline's preprocess, head and feature codec, the whole model) and takes
the CPU time (time.process_time: every thread of the process, so torch's own threads count). A textured picture
costs x264 more than most scenes: the pixels estimate errs high. The plan itself is services/edge/partition_plan.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitinfer.errors import ConfigError
from splitinfer.services.edge.partition_plan import PartitionCurves, Plan, parse_partitions, plan

log = logging.getLogger("splitinfer.edge")

MEASURED_FRAMES = 3
_TEST_SIZE = (432, 768)  # height, width of the test picture (the shared sample video's size)


def load_curves(model_name: str, path: str | None) -> PartitionCurves:
    """The partition curves file given, else the one shipped with the model; checked against the model."""
    from splitinfer.services.profiles import shipped_file

    found = path or shipped_file(model_name, "partitions")
    if found is None:
        raise ConfigError(f"model {model_name} ships no partition curves: measure them on a video of your own "
                          "(splitinfer calibrate-partitions VIDEO) and pass --partition-curves FILE.")
    curves = PartitionCurves.load(found)
    if curves.model != model_name:
        raise ConfigError(f"partition curves {str(found)!r} were measured for model {curves.model}, not {model_name}: "
                          f"pass --model {curves.model}, or calibrate {model_name} (splitinfer calibrate-partitions).")
    return curves


def default_edge_budget_ms(fps: float) -> float:
    """Without --edge-budget-ms, a frame may take the CPU for one frame interval of the source."""
    return 1000.0 / fps


def _cpu_ms(work: Callable[[], Any], frames: int) -> float:
    work()  # the first call pays for lazy set-up (encoder, kernels): not per-frame cost
    started = time.process_time()
    for _ in range(frames):
        work()
    return 1000 * (time.process_time() - started) / frames


def measure_edge_costs(model: Any, cut: str, partitions: Iterable[str], *, pixel_settings: Any, fps: float,
                       frames: int = MEASURED_FRAMES) -> dict[str, float]:
    """CPU ms per frame of each partition's edge work on this device (`frames` frames after one warm-up)."""
    from splitinfer.services.edge.capture import CapturedFrame
    from splitinfer.services.edge.partitions import PixelPipeline
    from splitinfer.services.edge.pipeline import EdgePipeline
    from splitinfer.services.profiles import CodecSettings, resolve_profile
    from splitinfer.services.whole_model import detect

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*_TEST_SIZE, 3), dtype=np.uint8)
    counter = iter(range(1 << 30))

    def frame() -> CapturedFrame:
        sequence = next(counter)
        return CapturedFrame(sequence, image, time.time_ns(), time.monotonic_ns(), 0.0, sequence / fps)

    costs: dict[str, float] = {}
    for name in partitions:
        if name == "pixels":
            pipeline: Any = PixelPipeline(model, pixel_settings, fps=fps)
        elif name == "features":
            pipeline = EdgePipeline(model, resolve_profile(model, cut, CodecSettings()))
            pipeline.warm_up()
        else:
            costs[name] = _cpu_ms(lambda: detect(model, image), frames)
            continue
        costs[name] = _cpu_ms(lambda: pipeline.encode(pipeline.run_head(frame())), frames)
    return costs


@dataclass(frozen=True)
class AutoRequest:
    """What the user asked of auto: the uplink, the compute budget (None: one frame interval), the partitions."""

    rate_kbps: float | None
    edge_budget_ms: float | None = None
    partitions: str | None = None
    curves: str | None = None

    def check(self) -> tuple[str, ...]:
        """The checks that need no model: the budgets are positive, the partitions known; returns them."""
        if self.rate_kbps is None:
            raise ConfigError("--partition auto plans within an uplink budget: add --rate-kbps (kbit/s).")
        if not self.rate_kbps > 0:
            raise ConfigError(f"--rate-kbps must be positive, got {self.rate_kbps:g}.")
        if self.edge_budget_ms is not None and not self.edge_budget_ms > 0:
            raise ConfigError(f"--edge-budget-ms must be positive (CPU ms per frame), got {self.edge_budget_ms:g}.")
        return parse_partitions(self.partitions)


def resolve_plan(model: Any, request: AutoRequest, *, fps: float, pixel_settings: Any,
                 costs: dict[str, float] | None = None) -> tuple[Plan, dict[str, float]]:
    """The plan for this edge: curves (given or shipped), costs (given, or measured now), budgets; and the costs."""
    allowed = request.check()
    curves = load_curves(model.name, request.curves)
    cut = curves.cut or model.default_cut
    if costs is None:
        costs = measure_edge_costs(model, cut, [p for p in allowed if p in curves.partitions],
                                   pixel_settings=pixel_settings, fps=fps)
    budget = request.edge_budget_ms if request.edge_budget_ms is not None else default_edge_budget_ms(fps)
    assert request.rate_kbps is not None  # request.check()
    chosen = plan(curves, costs, uplink_kbps=request.rate_kbps, edge_budget_ms=budget, partitions=allowed)
    log.info("auto partition: %s (edge CPU ms/frame measured: %s)", chosen.describe(),
             ", ".join(f"{k} {v:.1f}" for k, v in costs.items()))
    return chosen, costs
