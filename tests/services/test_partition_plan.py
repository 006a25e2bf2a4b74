"""The partition plan: within an uplink and an edge compute budget, the point with the fewest predicted detection
changes; never an infeasible one, never worse for a larger budget, only among the partitions allowed, and a
clear error saying what budget would fit when nothing does. The partition curves file: versioned, checked."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.errors import ConfigError
from splitinfer.services.edge.partition_plan import (
    PARTITIONS,
    NoFeasiblePlan,
    OperatingPoint,
    PartitionCurves,
    PartitionCurvesError,
    parse_partitions,
    plan,
)
from splitinfer.services.profiles import shipped_file

RATES = st.floats(1, 2000, allow_nan=False)
COSTS = st.fixed_dictionaries({name: st.floats(0.1, 200, allow_nan=False) for name in PARTITIONS})


@st.composite
def curves(draw) -> PartitionCurves:
    points = []
    for partition in draw(st.lists(st.sampled_from(PARTITIONS), min_size=1, max_size=3, unique=True)):
        for _ in range(draw(st.integers(1, 5))):
            kbps = draw(RATES)
            target = None if partition == "detections" else draw(st.floats(1, 2000, allow_nan=False))
            points.append(OperatingPoint(partition, kbps, draw(st.floats(0, 20, allow_nan=False)), target))
    return PartitionCurves("yolo-fastest-1.1-xl", tuple(points))


def _fits(point: OperatingPoint, costs, uplink: float, edge_ms: float) -> bool:
    return point.needs_kbps <= uplink and costs[point.partition] <= edge_ms


@settings(max_examples=300, deadline=None)
@given(curves(), COSTS, RATES, st.floats(0.1, 300, allow_nan=False))
def test_the_plan_fits_both_budgets_and_is_the_best_that_does(given_curves, costs, uplink, edge_ms) -> None:
    feasible = [p for p in given_curves.points if _fits(p, costs, uplink, edge_ms)]
    if not feasible:
        with pytest.raises(NoFeasiblePlan):
            plan(given_curves, costs, uplink_kbps=uplink, edge_budget_ms=edge_ms)
        return
    chosen = plan(given_curves, costs, uplink_kbps=uplink, edge_budget_ms=edge_ms)
    assert _fits(chosen.point, costs, uplink, edge_ms)
    assert chosen.predicted_changes_per_frame == min(p.changes_per_frame for p in feasible)
    assert chosen.partition == chosen.point.partition
    assert (chosen.rate_kbps is None) == (chosen.partition == "detections")


@settings(max_examples=300, deadline=None)
@given(curves(), COSTS, RATES, RATES, st.floats(0.1, 300), st.floats(0.1, 300))
def test_a_larger_budget_never_predicts_more_changes(given_curves, costs, uplink_a, uplink_b, ms_a, ms_b) -> None:
    low = (min(uplink_a, uplink_b), min(ms_a, ms_b))
    high = (max(uplink_a, uplink_b), max(ms_a, ms_b))
    try:
        at_low = plan(given_curves, costs, uplink_kbps=low[0], edge_budget_ms=low[1])
    except NoFeasiblePlan:
        return
    at_high = plan(given_curves, costs, uplink_kbps=high[0], edge_budget_ms=high[1])  # what fitted still fits
    assert at_high.predicted_changes_per_frame <= at_low.predicted_changes_per_frame


@settings(max_examples=200, deadline=None)
@given(curves(), COSTS, RATES, st.floats(0.1, 300),
       st.lists(st.sampled_from(PARTITIONS), min_size=1, max_size=3, unique=True))
def test_a_restriction_is_respected(given_curves, costs, uplink, edge_ms, allowed) -> None:
    try:
        chosen = plan(given_curves, costs, uplink_kbps=uplink, edge_budget_ms=edge_ms, partitions=allowed)
    except ConfigError:  # nothing fits, or the curves hold no allowed partition
        assert not any(_fits(p, costs, uplink, edge_ms) for p in given_curves.points if p.partition in allowed)
        return
    assert chosen.partition in allowed


@settings(max_examples=200, deadline=None)
@given(curves(), COSTS, RATES, st.floats(0.1, 300))
def test_the_error_names_a_budget_that_fits(given_curves, costs, uplink, edge_ms) -> None:
    try:
        plan(given_curves, costs, uplink_kbps=uplink, edge_budget_ms=edge_ms)
    except NoFeasiblePlan as error:
        if error.needed_kbps is not None:
            plan(given_curves, costs, uplink_kbps=error.needed_kbps, edge_budget_ms=edge_ms)
            assert f"{error.needed_kbps:.1f} kbit/s" in str(error)
        if error.needed_edge_ms is not None:
            plan(given_curves, costs, uplink_kbps=uplink, edge_budget_ms=error.needed_edge_ms)
        assert "--rate-kbps" in str(error) or "--edge-budget-ms" in str(error) or "both" in str(error)


CURVES = PartitionCurves("m", (OperatingPoint("pixels", 60.0, 3.0, 64.0, setting="h264"),
                               OperatingPoint("features", 120.0, 1.0, 128.0, setting="ladder"),
                               OperatingPoint("detections", 2.0, 0.0)))
EDGE = {"pixels": 2.0, "features": 30.0, "detections": 45.0}


def test_detections_win_on_a_strong_edge_pixels_on_a_weak_one_features_between() -> None:
    assert plan(CURVES, EDGE, uplink_kbps=256, edge_budget_ms=100).partition == "detections"
    middle = plan(CURVES, EDGE, uplink_kbps=256, edge_budget_ms=40)
    assert (middle.partition, middle.rate_kbps) == ("features", 256)
    assert plan(CURVES, EDGE, uplink_kbps=256, edge_budget_ms=10).partition == "pixels"
    assert plan(CURVES, EDGE, uplink_kbps=64, edge_budget_ms=40).partition == "pixels"


def test_nothing_fits_says_which_budget_would() -> None:
    with pytest.raises(NoFeasiblePlan, match=r"at least 64.0 kbit/s \(--rate-kbps\).*at least 45.0 ms/frame") as error:
        plan(CURVES, EDGE, uplink_kbps=32, edge_budget_ms=5)
    assert error.value.needed_kbps == 64 and error.value.needed_edge_ms == 45.0


@pytest.mark.parametrize("uplink, edge_ms, flag", [(-1, 10, "--rate-kbps"), (64, -5, "--edge-budget-ms"),
                                                   (0, 10, "--rate-kbps"), (math.nan, 10, "--rate-kbps"),
                                                   (64, math.nan, "--edge-budget-ms")])
def test_budgets_must_be_positive(uplink, edge_ms, flag) -> None:
    with pytest.raises(ConfigError, match=flag):
        plan(CURVES, EDGE, uplink_kbps=uplink, edge_budget_ms=edge_ms)


def test_partitions_flag_is_checked() -> None:
    assert parse_partitions("features, PIXELS") == ("pixels", "features")
    assert parse_partitions(None) == PARTITIONS
    with pytest.raises(ConfigError, match="'audio' is not a partition"):
        parse_partitions("pixels,audio")
    with pytest.raises(ConfigError, match="no point of detections"):
        plan(PartitionCurves("m", (CURVES.points[0],)), EDGE, uplink_kbps=64, edge_budget_ms=9,
             partitions=["detections"])


def test_a_partition_without_a_measured_cost_is_refused() -> None:
    with pytest.raises(ConfigError, match="no edge cost for the features partition"):
        plan(CURVES, {"pixels": 1.0, "detections": 3.0}, uplink_kbps=64, edge_budget_ms=9)


def test_curves_survive_a_round_trip_and_bad_files_are_refused(tmp_path) -> None:
    path = tmp_path / "curves.json"
    CURVES.save(path)
    assert PartitionCurves.load(path) == CURVES
    data = json.loads(path.read_text())
    for mutate, message in [(lambda d: d.update(id="splitinfer.partition-curves/0"), "another version"),
                            (lambda d: d["points"][0].update(partition="audio"), "partition 'audio'"),
                            (lambda d: d["points"][1].update(kbps=-3), "finite and >= 0"),
                            (lambda d: d["points"][1].pop("changes_per_frame"), "missing or malformed"),
                            (lambda d: d.update(points=[]), "no operating point"),
                            (lambda d: d.update(edge_ms={"pixels": "fast"}), "malformed")]:
        broken = json.loads(json.dumps(data))
        mutate(broken)
        path.write_text(json.dumps(broken))
        with pytest.raises(PartitionCurvesError, match=message):
            PartitionCurves.load(path)
    path.write_text("{not json")
    with pytest.raises(PartitionCurvesError, match="is not JSON"):
        PartitionCurves.load(path)
    with pytest.raises(PartitionCurvesError, match="cannot be read"):
        PartitionCurves.load(tmp_path / "absent.json")


def test_the_model_ships_curves_for_every_partition() -> None:
    path = shipped_file("yolo-fastest-1.1-xl", "partitions")
    assert path is not None, "dnn/profiles/yolo-fastest-1.1-xl-partitions.json is missing"
    shipped = PartitionCurves.load(path)
    assert shipped.model == "yolo-fastest-1.1-xl" and set(shipped.partitions) == set(PARTITIONS)
    assert shipped.video, "the curves must say which video selected them"


def _switcher(uplink: float = 256, edge_ms: float = 100):
    from splitinfer.services.edge.auto_partition import PartitionSwitcher

    chosen = plan(CURVES, EDGE, uplink_kbps=uplink, edge_budget_ms=edge_ms)
    return PartitionSwitcher(CURVES, EDGE, chosen, build=lambda p: p)


def _run_frames(switcher, frames: int) -> None:
    for _ in range(frames):
        switcher.frame_sent()


def test_the_switcher_waits_for_enough_frames_and_a_real_change_of_budget() -> None:
    from splitinfer.services.edge.auto_partition import MIN_FRAMES_BETWEEN_SWITCHES

    switcher = _switcher()
    assert switcher.plan.partition == "detections"
    switcher.set_budgets(edge_budget_ms=35)  # the whole model no longer fits: features do
    _run_frames(switcher, MIN_FRAMES_BETWEEN_SWITCHES - 1)
    assert switcher.due() is None  # too soon after the start
    switcher.frame_sent()
    chosen = switcher.due()
    assert chosen is not None and chosen.partition == "features"
    switcher.switched(switcher.plan, chosen)
    assert switcher.stats.switches == 1 and switcher.due() is None  # too soon after the switch
    _run_frames(switcher, MIN_FRAMES_BETWEEN_SWITCHES)
    switcher.set_budgets(edge_budget_ms=33)  # moved less than REPLAN_CHANGE: no re-plan
    assert switcher.due() is None and switcher.stats.replans == 1  # the one that switched


def test_the_switcher_keeps_a_partition_that_still_fits_unless_another_is_clearly_better() -> None:
    switcher = _switcher(uplink=256, edge_ms=40)
    assert switcher.plan.partition == "features"
    _run_frames(switcher, 100)
    switcher.set_budgets(uplink_kbps=128)  # features still fit at 128: predicted 1.0, pixels 3.0
    assert switcher.due() is None and switcher.plan.uplink_kbps == 128  # re-based on the new budget
    switcher.set_budgets(uplink_kbps=64)  # features no longer fit: pixels
    chosen = switcher.due()
    assert chosen is not None and chosen.partition == "pixels" and chosen.rate_kbps == 64
    switcher.switched(switcher.plan, chosen)
    _run_frames(switcher, 100)
    switcher.set_budgets(uplink_kbps=8)  # nothing fits: keep what runs (and say so in the log)
    assert switcher.due() is None and switcher.plan.partition == "pixels"


def test_detections_that_send_more_than_calibrated_are_replanned_when_they_overflow_the_uplink() -> None:
    """Over the uplink means more than a burst: their frames would queue over LINK_QUEUE_S of the link."""
    from splitinfer.services.edge.auto_partition import LINK_QUEUE_S, MIN_FRAMES_BETWEEN_SWITCHES, PartitionSwitcher

    curves = PartitionCurves("m", (OperatingPoint("pixels", 15.0, 3.0, 16.0), OperatingPoint("detections", 2.0, 0.0)))
    chosen = plan(curves, EDGE, uplink_kbps=32, edge_budget_ms=100)
    switcher = PartitionSwitcher(curves, EDGE, chosen, build=lambda p: p, fps=10.0)
    assert chosen.partition == "detections"
    for _ in range(MIN_FRAMES_BETWEEN_SWITCHES):
        switcher.frame_sent()
        switcher.observe(300)  # 24 kbit/s at 10 frames/s: more than calibrated, within the uplink
    assert switcher.due() is None
    for _ in range(8):
        switcher.observe(800)  # a busy moment at 64 kbit/s, which a 32 kbit/s uplink queues for under 1 s
    assert switcher.queued_s() <= LINK_QUEUE_S and switcher.due() is None
    for _ in range(100):
        switcher.observe(452)  # a crowd: 36 kbit/s on a 32 kbit/s uplink, queueing without end
    assert switcher.queued_s() > LINK_QUEUE_S
    replanned = switcher.due()
    assert replanned is not None and replanned.partition == "pixels" and replanned.rate_kbps == 32


def test_detections_probed_at_zero_bytes_are_still_replanned_when_a_crowd_arrives() -> None:
    """A scene probe that saw no object corrects the detections' rate to 0 kbit/s; the run-time correction must
    still see them outgrow the uplink (a rate of 0 cannot be scaled)."""
    from splitinfer.services.edge.auto_partition import MIN_FRAMES_BETWEEN_SWITCHES, PartitionSwitcher

    curves = PartitionCurves("m", (OperatingPoint("pixels", 15.0, 3.0, 16.0), OperatingPoint("detections", 0.0, 0.0)))
    chosen = plan(curves, EDGE, uplink_kbps=32, edge_budget_ms=100)
    switcher = PartitionSwitcher(curves, EDGE, chosen, build=lambda p: p, fps=10.0)
    assert chosen.partition == "detections"
    for _ in range(MIN_FRAMES_BETWEEN_SWITCHES + 60):
        switcher.frame_sent()
        switcher.observe(452)  # 36 kbit/s on a 32 kbit/s uplink
    replanned = switcher.due()
    assert replanned is not None and replanned.partition == "pixels" and replanned.rate_kbps == 32
