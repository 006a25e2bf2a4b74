"""The partition plan: which partition and operating point the edge runs, within an uplink and a compute budget.

`splitinfer calibrate-partitions` measures, on a calibration video, each partition's rate-fidelity curve (pixels
and features at a ladder of target bitrates, detections at its own small rate) and writes them as a versioned
"partition curves" file; the model ships one (dnn/profiles/<model>-partitions.json). The edge measures what each
partition costs on its own CPU (services/edge/edge_costs.py). `plan` then picks, among the points that fit both
budgets, the one with the fewest predicted detection changes (lost + added against the unsplit model): pixels cost
little CPU but many bits at equal fidelity, detections cost the whole model on the edge and almost no bits,
features sit between. Torch-free, so that preflight and tests can use it without loading a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from splitinfer.errors import ConfigError

CURVES_ID = "splitinfer.partition-curves/1"
PARTITIONS = ("pixels", "features", "detections")
# Partitions whose bitrate the edge sets (the rest send what they send).
RATED = ("pixels", "features")


class PartitionCurvesError(ConfigError):
    """A partition curves file is missing, not JSON, of another version or has a bad field."""


class NoFeasiblePlan(ConfigError):
    """No partition fits the budgets; the message (and `needed_kbps`, `needed_edge_ms`) say what would."""

    def __init__(self, message: str, *, needed_kbps: float | None, needed_edge_ms: float | None) -> None:
        super().__init__(message)
        self.needed_kbps = needed_kbps
        self.needed_edge_ms = needed_edge_ms


@dataclass(frozen=True)
class OperatingPoint:
    """One measured point of a partition's rate-fidelity curve."""

    partition: str
    kbps: float  # uplink bits per second of source time, as measured
    changes_per_frame: float  # detections lost + added against the unsplit model, per frame
    target_kbps: float | None = None  # the bitrate the edge was told to hold (None: detections send what they find)
    changes_se: float = math.nan  # standard error of changes_per_frame (block jackknife), when measured
    setting: str = ""  # what ran, for people: "h264 veryfast", "ladder of cut 60"

    @property
    def needs_kbps(self) -> float:
        """The uplink this point needs: the target its rate control holds (pixels, features), else what it measured."""
        return self.kbps if self.target_kbps is None else self.target_kbps


@dataclass(frozen=True)
class PartitionCurves:
    """Rate-fidelity points of every partition of one model, and where they were measured."""

    model: str
    points: tuple[OperatingPoint, ...]
    cut: str | None = None  # the features partition's cut
    edge_ms: Mapping[str, float] = field(default_factory=dict)  # CPU ms/frame per partition on the calibrating CPU
    video: str = ""  # the calibration video (it selected the plan's points: report on others)
    frames: int = 0
    fps: float = 0.0

    def __post_init__(self) -> None:
        if not self.points:
            raise PartitionCurvesError("partition curves hold no operating point; calibrate again "
                                       "(splitinfer calibrate-partitions).")
        for point in self.points:
            _check_point(point)
        for name, ms in self.edge_ms.items():
            if name not in PARTITIONS or not _non_negative(ms):
                raise PartitionCurvesError(f"edge_ms[{name!r}] = {ms!r}: want a partition ({', '.join(PARTITIONS)}) "
                                           "and a finite number of milliseconds >= 0.")

    @property
    def partitions(self) -> tuple[str, ...]:
        return tuple(p for p in PARTITIONS if any(point.partition == p for point in self.points))

    def to_json(self) -> dict[str, Any]:
        points = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(p).items()}
                  for p in self.points]
        return {"id": CURVES_ID, "model": self.model, "cut": self.cut, "video": self.video, "frames": self.frames,
                "fps": self.fps, "edge_ms": dict(self.edge_ms), "points": points}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def from_json(cls, data: Any, where: str = "partition curves") -> PartitionCurves:
        if not isinstance(data, dict):
            raise PartitionCurvesError(f"{where} is not a JSON object.")
        if data.get("id") != CURVES_ID:
            raise PartitionCurvesError(f"{where} has id {data.get('id')!r}, not {CURVES_ID!r}: it was written by "
                                       "another version; calibrate again (splitinfer calibrate-partitions).")
        try:
            points = tuple(OperatingPoint(
                partition=str(p["partition"]), kbps=float(p["kbps"]), changes_per_frame=float(p["changes_per_frame"]),
                target_kbps=None if p.get("target_kbps") is None else float(p["target_kbps"]),
                changes_se=math.nan if p.get("changes_se") is None else float(p["changes_se"]),
                setting=str(p.get("setting", ""))) for p in data["points"])
            return cls(model=str(data["model"]), points=points, cut=None if data.get("cut") is None else str(data["cut"]),
                       edge_ms={str(k): float(v) for k, v in (data.get("edge_ms") or {}).items()},
                       video=str(data.get("video", "")), frames=int(data.get("frames", 0)),
                       fps=float(data.get("fps", 0.0)))
        except PartitionCurvesError as exc:
            raise PartitionCurvesError(f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PartitionCurvesError(f"{where} has a missing or malformed field ({type(exc).__name__}: {exc}); "
                                       "calibrate again (splitinfer calibrate-partitions).") from None

    @classmethod
    def load(cls, path: str | Path) -> PartitionCurves:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise PartitionCurvesError(f"partition curves {str(path)!r} cannot be read ({exc.strerror or exc}): check "
                                       "--partition-curves.") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PartitionCurvesError(f"partition curves {str(path)!r} is not JSON ({exc}).") from None
        return cls.from_json(data, f"partition curves {str(path)!r}")


def _non_negative(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def _check_point(point: OperatingPoint) -> None:
    if point.partition not in PARTITIONS:
        raise PartitionCurvesError(f"a point of partition {point.partition!r}: want one of {', '.join(PARTITIONS)}.")
    if not (_non_negative(point.kbps) and _non_negative(point.changes_per_frame)):
        raise PartitionCurvesError(f"a {point.partition} point has kbps {point.kbps!r} and changes per frame "
                                   f"{point.changes_per_frame!r}: both must be finite and >= 0.")
    if point.target_kbps is not None and not (_non_negative(point.target_kbps) and point.target_kbps > 0):
        raise PartitionCurvesError(f"a {point.partition} point has target_kbps {point.target_kbps!r}: want > 0.")


def parse_partitions(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """`--partitions pixels,features`: the partitions auto may choose among (None or empty: all), checked."""
    if text is None:
        return PARTITIONS
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in PARTITIONS]
    if unknown:
        raise ConfigError(f"--partitions: {', '.join(map(repr, unknown))} is not a partition; use a comma-separated "
                          f"subset of {','.join(PARTITIONS)}.")
    return tuple(p for p in PARTITIONS if p in names) or PARTITIONS


@dataclass(frozen=True)
class Plan:
    """What the edge runs: a partition, the bitrate it holds, and why (the point that predicts its fidelity)."""

    partition: str
    rate_kbps: float | None  # the budget pixels and features hold (None: detections)
    point: OperatingPoint
    edge_ms: float  # the partition's CPU ms per frame on this edge
    uplink_kbps: float
    edge_budget_ms: float

    @property
    def predicted_changes_per_frame(self) -> float:
        return self.point.changes_per_frame

    def describe(self) -> str:
        rate = f" at {self.rate_kbps:g} kbit/s" if self.rate_kbps is not None else ""
        return (f"{self.partition}{rate}: predicted {self.point.changes_per_frame:.2f} detection changes/frame "
                f"(calibrated {self.point.setting or self.partition} at {self.point.kbps:.1f} kbit/s), "
                f"{self.edge_ms:.1f} ms/frame of edge CPU; budgets {self.uplink_kbps:g} kbit/s, "
                f"{self.edge_budget_ms:g} ms/frame")


def _check_budget(value: float, what: str, flag: str) -> None:
    if not (isinstance(value, (int, float)) and not math.isnan(value) and value > 0):
        raise ConfigError(f"{flag}: the {what} must be a positive number, got {value!r}.")


def plan(curves: PartitionCurves, costs: Mapping[str, float], *, uplink_kbps: float, edge_budget_ms: float,
         partitions: Iterable[str] | None = None) -> Plan:
    """The feasible point with the fewest predicted changes (ties: fewer bits, then less edge CPU).

    A point fits when the uplink covers what it needs (`OperatingPoint.needs_kbps`) and its partition's edge cost
    (`costs`, CPU ms per frame) is within `edge_budget_ms`. Pixels and features then run at the whole uplink
    budget; the prediction is the calibrated point at or below it. Raises NoFeasiblePlan saying which budget
    would make something fit."""
    _check_budget(uplink_kbps, "uplink budget (kbit/s)", "--rate-kbps")
    _check_budget(edge_budget_ms, "edge compute budget (ms/frame)", "--edge-budget-ms")
    allowed = parse_partitions(partitions)
    candidates = [p for p in curves.points if p.partition in allowed]
    if not candidates:
        raise ConfigError(f"the partition curves of {curves.model} hold no point of {', '.join(allowed)}: widen "
                          "--partitions, or calibrate those partitions (splitinfer calibrate-partitions).")
    for name in {p.partition for p in candidates}:
        if name not in costs or not _non_negative(costs[name]):
            raise ConfigError(f"no edge cost for the {name} partition (got {costs.get(name)!r}); the edge measures "
                              "one per partition at start-up.")
    fitting = [p for p in candidates if p.needs_kbps <= uplink_kbps and costs[p.partition] <= edge_budget_ms]
    if not fitting:
        raise _nothing_fits(candidates, costs, uplink_kbps, edge_budget_ms, allowed)
    order = {name: i for i, name in enumerate(PARTITIONS)}
    best = min(fitting, key=lambda p: (p.changes_per_frame, p.needs_kbps, costs[p.partition], order[p.partition]))
    return Plan(best.partition, uplink_kbps if best.partition in RATED else None, best, float(costs[best.partition]),
                float(uplink_kbps), float(edge_budget_ms))


def _nothing_fits(candidates: list[OperatingPoint], costs: Mapping[str, float], uplink_kbps: float,
                  edge_budget_ms: float, allowed: tuple[str, ...]) -> NoFeasiblePlan:
    on_this_edge = [p.needs_kbps for p in candidates if costs[p.partition] <= edge_budget_ms]
    on_this_link = [costs[p.partition] for p in candidates if p.needs_kbps <= uplink_kbps]
    needed_kbps = min(on_this_edge) if on_this_edge else None
    needed_ms = min(on_this_link) if on_this_link else None
    ways = []
    if needed_kbps is not None:
        ways.append(f"an uplink of at least {needed_kbps:.1f} kbit/s (--rate-kbps)")
    if needed_ms is not None:
        ways.append(f"an edge budget of at least {needed_ms:.1f} ms/frame (--edge-budget-ms)")
    if not ways:
        cheapest = min(candidates, key=lambda p: (costs[p.partition], p.needs_kbps))
        ways.append(f"both: {cheapest.needs_kbps:.1f} kbit/s and {costs[cheapest.partition]:.1f} ms/frame "
                    f"({cheapest.partition})")
    return NoFeasiblePlan(
        f"no partition of {', '.join(allowed)} fits an uplink of {uplink_kbps:g} kbit/s and an edge budget of "
        f"{edge_budget_ms:g} ms/frame (edge costs: "
        f"{', '.join(f'{n} {costs[n]:.1f} ms' for n in allowed if n in costs)}); it needs {' or '.join(ways)}, "
        "or a wider --partitions.", needed_kbps=needed_kbps, needed_edge_ms=needed_ms)
