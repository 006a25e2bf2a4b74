"""`--partition auto` on this edge: measure what each partition costs here, then plan within the budgets.

The start-up measurement codes a few frames of a textured test picture through each partition's real edge code
(PixelPipeline's resize and H.264, EdgePipeline's preprocess, head and feature codec, the whole model) and takes
the CPU time (time.process_time: every thread of the process, so torch's own threads count). A textured picture
costs x264 more than most scenes: the pixels estimate errs high. The plan itself is services/edge/partition_plan.py.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitinfer.errors import ConfigError
from splitinfer.services.edge.partition_plan import RATED, PartitionCurves, Plan, parse_partitions, plan

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
    """What the user asked of auto: the uplink, the compute budget (None: one frame interval), the partitions, the
    curves file, and the scene probe's frames (None: DEFAULT_PROBE_FRAMES; 0: plan from the curves alone)."""

    rate_kbps: float | None
    edge_budget_ms: float | None = None
    partitions: str | None = None
    curves: str | None = None
    probe_frames: int | str | None = None

    def check(self) -> tuple[str, ...]:
        """The checks that need no model: the budgets are positive, the partitions known, the probe's frames a
        whole number >= 0; returns the partitions."""
        if self.rate_kbps is None:
            raise ConfigError("--partition auto plans within an uplink budget: add --rate-kbps (kbit/s).")
        if not self.rate_kbps > 0:
            raise ConfigError(f"--rate-kbps must be positive, got {self.rate_kbps:g}.")
        if self.edge_budget_ms is not None and not self.edge_budget_ms > 0:
            raise ConfigError(f"--edge-budget-ms must be positive (CPU ms per frame), got {self.edge_budget_ms:g}.")
        self.frames_to_probe()
        return parse_partitions(self.partitions)

    def frames_to_probe(self) -> int:
        """K, the frames the scene probe measures (checked: ConfigError when not a whole number >= 0)."""
        from splitinfer.services.edge.scene_probe import DEFAULT_PROBE_FRAMES, check_probe_frames

        return DEFAULT_PROBE_FRAMES if self.probe_frames is None else check_probe_frames(self.probe_frames)


@dataclass(frozen=True)
class ResolvedAuto:
    """What auto resolved at start: the plan, this edge's costs, the curves it planned on (corrected by the scene
    probe when there was one: the PartitionSwitcher keeps them) and the probe."""

    plan: Plan
    costs: dict[str, float]
    curves: PartitionCurves
    probe: Any = None  # a scene_probe.SceneProbe, or None without one


def resolve_plan(model: Any, request: AutoRequest, *, fps: float, pixel_settings: Any,
                 costs: dict[str, float] | None = None, curves: PartitionCurves | None = None,
                 probe_images: Sequence[np.ndarray] | None = None, ladder: Any = None,
                 probe_cache: dict[Any, Any] | None = None) -> ResolvedAuto:
    """The plan for this edge: curves (given, else request.curves or the shipped ones), costs (given, or measured
    now), budgets; with `probe_images` (the source's first K frames) the scene probe corrects the curves first
    (services/edge/scene_probe.py; `ladder`: the features partition's)."""
    allowed = request.check()
    curves = curves or load_curves(model.name, request.curves)
    cut = curves.cut or model.default_cut
    if costs is None:
        costs = measure_edge_costs(model, cut, [p for p in allowed if p in curves.partitions],
                                   pixel_settings=pixel_settings, fps=fps)
    budget = request.edge_budget_ms if request.edge_budget_ms is not None else default_edge_budget_ms(fps)
    assert request.rate_kbps is not None  # request.check()
    probe = None
    if probe_images:
        from splitinfer.services.edge.scene_probe import probe_and_choose

        chosen, curves, probe = probe_and_choose(model, probe_images, curves, costs, uplink_kbps=request.rate_kbps,
                                                 edge_budget_ms=budget, partitions=allowed, fps=fps,
                                                 pixel_settings=pixel_settings, ladder=ladder, cache=probe_cache)
    else:
        chosen = plan(curves, costs, uplink_kbps=request.rate_kbps, edge_budget_ms=budget, partitions=allowed)
    log.info("auto partition: %s (edge CPU ms/frame measured: %s)", chosen.describe(),
             ", ".join(f"{k} {v:.1f}" for k, v in costs.items()))
    return ResolvedAuto(chosen, costs, curves, probe)


# Re-plan only when a budget moved by at least this fraction since the plan was made, switch only to a plan that
# predicts at most SWITCH_GAIN times the current partition's changes (or when the current one no longer fits),
# and never twice within MIN_FRAMES_BETWEEN_SWITCHES frames: a switch costs a key frame and a new call.
REPLAN_CHANGE = 0.2
SWITCH_GAIN = 0.8
MIN_FRAMES_BETWEEN_SWITCHES = 30
# A partition that sets no bitrate (detections) is over the uplink when its frames would queue more than this many
# seconds of it: live latency, where a burst of a busy second is absorbed.
LINK_QUEUE_S = 1.0


@dataclass
class SwitchStats:
    switches: int = 0
    replans: int = 0


class PartitionSwitcher:
    """Auto at run time: holds the plan, takes new budget estimates (the link's, a changed compute budget) and says
    when the edge should switch partition. The streamer asks `due()` between frames, with nothing in flight, and
    then builds the new partition's pipeline with `build` and opens a new call (docs/PARTITIONS.md, "Switching")."""

    def __init__(self, curves: PartitionCurves, costs: dict[str, float], chosen: Plan,
                 build: Callable[[Plan], Any], partitions: Iterable[str] | None = None, fps: float = 10.0) -> None:
        self.curves = curves
        self.fps = fps
        self.costs = dict(costs)
        self.plan = chosen
        self.build = build
        self.partitions = parse_partitions(partitions if partitions is None or isinstance(partitions, str)
                                           else list(partitions))
        self.stats = SwitchStats()
        self.uplink_kbps = chosen.uplink_kbps  # the latest estimates
        self.edge_budget_ms = chosen.edge_budget_ms
        self._frames_since_switch = 0
        self._bytes_per_frame: float | None = None  # of the running partition, smoothed
        self._queued_bytes = 0.0  # what the running partition's frames would have queued on the uplink

    def observe(self, payload_bytes: int) -> None:
        """A result of the running partition: what its frame really took on the uplink."""
        b = self._bytes_per_frame
        self._bytes_per_frame = float(payload_bytes) if b is None else 0.9 * b + 0.1 * payload_bytes
        drained = self.uplink_kbps * 1000 / 8 / self.fps
        self._queued_bytes = max(0.0, self._queued_bytes - drained) + payload_bytes

    def queued_s(self) -> float:
        """Seconds of uplink the running partition's frames would queue, had it sent them at the uplink budget."""
        return 8 * self._queued_bytes / (self.uplink_kbps * 1000)

    def observed_curves(self) -> PartitionCurves:
        """The curves with the running partition's rate corrected by what it sends here, when it sets no bitrate
        of its own (detections: their bytes are the scene's objects, not a target)."""
        current = self.plan
        calibrated = min(p.kbps for p in self.curves.points if p.partition == current.partition)
        if current.partition in RATED or self._bytes_per_frame is None:
            return self.curves
        observed = 8 * self._bytes_per_frame * self.fps / 1000
        # A rate of 0 (a scene probe that saw no object) cannot be scaled: the observed rate replaces it.
        points = tuple(p if p.partition != current.partition else dataclasses.replace(
            p, kbps=p.kbps * observed / calibrated if calibrated > 0 else observed) for p in self.curves.points)
        return dataclasses.replace(self.curves, points=points)

    def set_budgets(self, *, uplink_kbps: float | None = None, edge_budget_ms: float | None = None) -> None:
        """A new uplink estimate (kbit/s) or compute budget (CPU ms/frame); takes effect at the next `due()`."""
        if uplink_kbps is not None:
            self.uplink_kbps = float(uplink_kbps)
        if edge_budget_ms is not None:
            self.edge_budget_ms = float(edge_budget_ms)

    def set_cost(self, partition: str, ms: float) -> None:
        """A new measurement of a partition's CPU ms per frame on this edge."""
        self.costs[partition] = float(ms)

    def frame_sent(self) -> None:
        self._frames_since_switch += 1

    def _moved(self) -> bool:
        def moved(new: float, old: float) -> bool:
            return abs(new - old) >= REPLAN_CHANGE * old

        current = self.plan
        cost_moved = moved(self.costs.get(current.partition, current.edge_ms), current.edge_ms)
        return moved(self.uplink_kbps, current.uplink_kbps) or moved(self.edge_budget_ms, current.edge_budget_ms) \
            or cost_moved

    def due(self) -> Plan | None:
        """A plan of another partition when the budgets moved enough (or the running partition sends more than
        the uplink takes) and it predicts clearly fewer changes, or the current partition no longer fits; else
        None (the current plan may be re-based on the new budgets)."""
        if self._frames_since_switch < MIN_FRAMES_BETWEEN_SWITCHES:
            return None
        curves = self.observed_curves()
        # Over the uplink: its frames would queue more than LINK_QUEUE_S there (a burst the link absorbs is not),
        # and its smoothed rate no longer fits.
        overflowing = self.queued_s() > LINK_QUEUE_S and curves is not self.curves and not any(
            p.partition == self.plan.partition and p.needs_kbps <= self.uplink_kbps for p in curves.points)
        if not (overflowing or self._moved()):
            return None
        self.stats.replans += 1
        budgets = dict(uplink_kbps=self.uplink_kbps, edge_budget_ms=self.edge_budget_ms)
        try:
            best = plan(curves, self.costs, partitions=self.partitions, **budgets)
        except ConfigError as exc:
            log.warning("auto partition: keeping %s: %s", self.plan.partition, exc)
            if overflowing:  # said once, not at every frame
                self._frames_since_switch = 0
            return None
        try:
            staying = plan(curves, self.costs, partitions=[self.plan.partition], **budgets)
        except ConfigError:
            staying = None
        if best.partition == self.plan.partition or (
                staying is not None and best.predicted_changes_per_frame > SWITCH_GAIN * staying.predicted_changes_per_frame):
            self.plan = staying or best  # same partition: the new budgets are the reference from now on
            return None
        return best

    def switched(self, previous: Plan, chosen: Plan) -> None:
        """Record a switch made: log it (a JSON event with from, to and reason) and count it."""
        self.plan = chosen
        self.stats.switches += 1
        self._frames_since_switch = 0
        self._bytes_per_frame = None
        self._queued_bytes = 0.0
        reason = (f"budgets {previous.uplink_kbps:g} -> {chosen.uplink_kbps:g} kbit/s, {previous.edge_budget_ms:g} -> "
                  f"{chosen.edge_budget_ms:g} ms/frame")
        log.info("auto partition: switching from %s to %s (%s); %s", previous.partition, chosen.partition, reason,
                 chosen.describe(), extra={"event": {"event": "partition_switch", "from": previous.partition,
                                                     "to": chosen.partition, "reason": reason,
                                                     "rate_kbps": chosen.rate_kbps}})


class AutoRoundtrip:
    """`--partition auto` in one process (`splitinfer eval`, bench/auto_partition.py), as a streaming edge runs it:
    the plan's partition's round trip, the PartitionSwitcher told what each frame sent, and between frames a switch
    to another partition's round trip when it says so (the new one's coding starts afresh, with a key or intra
    frame, as a new call does). `round_trip(plan)` builds a partition's round trip (services/edge/partitions.py)."""

    def __init__(self, resolved: ResolvedAuto, round_trip: Callable[[Plan], Any], *, partitions: str | None,
                 fps: float) -> None:
        self.switcher = PartitionSwitcher(resolved.curves, resolved.costs, resolved.plan, build=round_trip,
                                          partitions=partitions, fps=fps)
        self.current = round_trip(resolved.plan)
        self.partitions_run: list[str] = []  # per frame, the partition that coded it
        self._cuts = [self.current.cut]
        self._finished_cpu_s = 0.0

    @property
    def cut(self) -> str:
        """The cut of the partition that ran, or of each in turn ("60+input") when auto switched."""
        return "+".join(dict.fromkeys(self._cuts))

    def summary(self) -> str:
        """Which partition coded which frames, e.g. "detections for frames 0-29, then features for 30-149"."""
        spans: list[tuple[str, int, int]] = []
        for index, name in enumerate(self.partitions_run):
            if spans and spans[-1][0] == name:
                spans[-1] = (name, spans[-1][1], index)
            else:
                spans.append((name, index, index))
        return ", then ".join(f"{name} for frames {first}-{last}" for name, first, last in spans)

    @property
    def encode_cpu_s(self) -> float:
        """The edge's CPU time over every round trip this one ran."""
        return self._finished_cpu_s + self.current.encode_cpu_s

    def __call__(self, image_bgr: np.ndarray) -> tuple[Any, Any, int]:
        chosen = self.switcher.due()
        if chosen is not None:
            previous = self.switcher.plan
            self._finished_cpu_s += self.current.encode_cpu_s
            self.current = self.switcher.build(chosen)
            self._cuts.append(self.current.cut)
            self.switcher.switched(previous, chosen)
        outputs, info, nbytes = self.current(image_bgr)
        self.switcher.observe(nbytes)
        self.switcher.frame_sent()
        self.partitions_run.append(self.switcher.plan.partition)
        return outputs, info, nbytes


def auto_round_trip(model: Any, resolved: ResolvedAuto, request: AutoRequest, *, pixel_settings: Any, ladder: Any,
                    fps: float) -> tuple[AutoRoundtrip, str]:
    """`splitinfer eval --partition auto`'s candidate: an AutoRoundtrip over eval's round trips, and its name."""
    from splitinfer.services.edge.partitions import round_trip

    def build(chosen: Plan) -> Any:
        return round_trip(model, chosen.partition, chosen.rate_kbps, pixel_settings=pixel_settings,
                          ladder=ladder if chosen.partition == "features" else None, fps=fps)[0]

    return AutoRoundtrip(resolved, build, partitions=request.partitions, fps=fps), f"auto ({resolved.plan.describe()})"
