"""Auto against the best single partition, at each uplink and edge budget (issue 18 item 5, "Auto is never worse").

For each video (named as in bench/rate_control.py, or a path; the first --frames frames at the native frame rate):
1. the edge costs: services/edge/auto_partition.py's start-up measurement (measure_edge_costs, the numbers
   `--partition auto` plans with), CPU ms/frame of pixels, features and detections on this machine;
2. three edge budgets from those costs: "whole model" (twice the detections cost), "head" (half-way between the
   features and the detections cost: the head fits, the whole model does not) and "pixels only" (half-way between
   the pixels and the features cost);
3. each single partition, as `splitinfer eval VIDEO --partition P --rate-kbps R --limit N --threads 1` runs it:
   the same round trips (services/edge/partitions.py), one stream per run, and eval's fidelity count per frame
   (lost + added against the unsplit model), with the references computed once per video (a test checks the
   counts and bytes against dnn/evaluation.py's evaluate_detection);
4. auto and auto restricted to pixels,features at each budget and rate, as `splitinfer eval --partition auto`
   runs it: resolve_plan with the costs of step 1, the shipped curves and the scene probe on the clip's first
   --probe-frames frames (services/edge/scene_probe.py: its own reference and round trips, each partition and
   rate probed once per video), then the chosen partition's round trip at the chosen rate over the whole clip,
   probe frames included (as live): the run of step 3 with that partition and rate (the same code on the same
   frames; two runs of a round trip give the same bytes and changes), unless auto's PartitionSwitcher, fed that
   run's bytes, would switch partition at run time (detections that outgrow the uplink): then auto itself runs
   (services/edge/auto_partition.py AutoRoundtrip, what eval runs) and its run is the cell's ("auto <cell>").
   `--report --sweep K...` re-derives the starting choices for other probe lengths from the runs' first K frames
   (and checks it reproduces the real probe's).
A single partition fits a cell when its measured edge cost is within the edge budget and, for detections (which
hold no bitrate), its achieved kbit/s is within the uplink; pixels and features are told to hold the uplink (their
achieved rate is in the tables: rate control overshoots on short clips). Auto passes a cell when its changes exceed
the best fitting partition's by at most one SE and it did not choose detections that send more than the uplink.
The difference auto - best fitting partition is paired on the same frames, SE by block jackknife over 30-frame
blocks (dnn/evaluation.py's block_se).

    nice python bench/auto_partition.py --out /tmp/auto.json --videos vtest Megamind tree --frames 150
    python bench/auto_partition.py --out /tmp/auto.json --report   # the tables for docs/RESULTS.md
    python bench/auto_partition.py --out /tmp/auto.json --report --sweep 0 10 30   # auto at other probe lengths
    python bench/auto_partition.py --out /tmp/auto_vtest.json --report --merge /tmp/auto_tree.json  # one process each
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rate_control import DATA, video_label, video_path  # noqa: E402

RATES_KBPS = (32.0, 64.0, 128.0, 256.0)
BUDGETS = ("whole model", "head", "pixels only")
RESTRICTIONS = (None, "pixels,features")


@dataclass
class PartitionRun:
    """One partition at one rate on one video: per-frame changes (lost + added), bytes, edge CPU."""

    partition: str
    rate_kbps: float | None  # what it was told to hold (None: detections)
    changes: list[int] = field(default_factory=list)
    bytes: int = 0
    kbps: float = 0.0
    edge_ms: float = 0.0  # the round trip's edge work, CPU ms/frame on this video
    frame_bytes: list[int] = field(default_factory=list)  # per frame (a K-frame probe's bytes are a prefix)


def budgets_from_costs(costs: dict[str, float]) -> dict[str, float]:
    """The three edge budgets (CPU ms/frame) from the measured partition costs; SystemExit if the costs are not
    ordered pixels < features < detections (then "head" or "pixels only" cannot be told apart)."""
    pixels, features, detections = costs["pixels"], costs["features"], costs["detections"]
    if not pixels < features < detections:
        raise SystemExit(f"edge costs not ordered pixels < features < detections ({costs}); measure again on a "
                         "quieter machine.")
    return {"whole model": 2 * detections, "head": (features + detections) / 2, "pixels only": (pixels + features) / 2}


def references(model, frames, cut: str) -> list[tuple[Any, list]]:
    """Per frame: the image and the unsplit model's live detections, as `splitinfer eval` computes them (head and
    tail at the cut, postprocess at eval's score and IoU thresholds, then the live score threshold)."""
    import torch

    from splitinfer.services.edge.scene_probe import live_detections

    split = model.split(cut)
    out = []
    with torch.no_grad():
        for frame in frames:
            if frame.image is None:
                continue  # an undecodable frame: eval skips it too
            x, info = model.preprocess(frame.image)
            out.append((frame.image, live_detections(model, split.tail(split.head(x)), info)))
    return out


def evaluate_frames(model, frames: list[tuple[Any, list]], candidate, fps: float, partition: str,
                    rate_kbps: float | None) -> PartitionRun:
    """`splitinfer eval`'s fidelity count (lost + added against the unsplit model) per frame of one candidate
    stream, with the references computed once per video (tests/test_bench_tools.py checks it against eval's)."""
    from splitinfer.services.edge.scene_probe import changes_and_bytes

    run = PartitionRun(partition, rate_kbps)
    run.changes, run.frame_bytes = changes_and_bytes(model, candidate, [image for image, _ in frames],
                                                     [reference for _, reference in frames])
    run.bytes = sum(run.frame_bytes)
    n = max(len(run.changes), 1)
    run.kbps = 8 * run.bytes * fps / n / 1000
    run.edge_ms = 1000 * candidate.encode_cpu_s / n
    return run


def round_trip(model, ladder, partition: str, rate_kbps: float | None, fps: float):
    """The round trip `splitinfer eval --partition P --rate-kbps R` builds (default pixel flags, the model's ladder)."""
    from splitinfer.services.edge.partitions import round_trip as eval_round_trip

    return eval_round_trip(model, partition, rate_kbps, pixel_settings=pixel_settings(rate_kbps), ladder=ladder,
                           fps=fps)[0]


def pixel_settings(rate_kbps: float | None):
    from splitinfer.services.pixels import pixel_settings_from_flags

    return pixel_settings_from_flags(preset=None, crf=None, rate_kbps=rate_kbps, key_interval=None, size=None)


def choose(model, curves, costs: dict[str, float], fps: float, rate_kbps: float, budget_ms: float,
           partitions: str | None, *, probe_images=(), ladder=None, probe_cache=None):
    """What auto starts with at these budgets: resolve_plan's ResolvedAuto with the measured costs and, with
    `probe_images`, the scene probe on them (as `splitinfer eval --partition auto` runs it); None when nothing
    fits."""
    from splitinfer.services.edge.auto_partition import AutoRequest, resolve_plan
    from splitinfer.services.edge.partition_plan import NoFeasiblePlan

    try:
        return resolve_plan(model, AutoRequest(rate_kbps, budget_ms, partitions, probe_frames=len(probe_images)),
                            fps=fps, pixel_settings=pixel_settings(rate_kbps), costs=costs, curves=curves,
                            probe_images=list(probe_images), ladder=ladder, probe_cache=probe_cache)
    except NoFeasiblePlan:
        return None


def first_switch(resolved, frame_bytes: list[int], partitions: str | None, fps: float) -> int | None:
    """The frame before which auto's PartitionSwitcher would switch, fed the bytes of the partition it started with
    (None: it keeps that partition over the clip, whose run is then auto's to the frame)."""
    from splitinfer.services.edge.auto_partition import PartitionSwitcher

    switcher = PartitionSwitcher(resolved.curves, resolved.costs, resolved.plan, build=lambda plan: None,
                                 partitions=partitions, fps=fps)
    for index, nbytes in enumerate(frame_bytes):
        if switcher.due() is not None:
            return index
        switcher.observe(nbytes)
        switcher.frame_sent()
    return None


def run_key(partition: str, rate_kbps: float | None) -> str:
    return partition if rate_kbps is None else f"{partition} {rate_kbps:g}"


def measure_video(model, ladder, curves, name: str, frames: int, rates: tuple[float, ...], log=print,
                  probe_frames: int = 0) -> dict[str, Any]:
    from splitinfer.dnn.eval_images import iter_source
    from splitinfer.services.edge.auto_partition import AutoRoundtrip, measure_edge_costs
    from splitinfer.services.pixels import video_file_fps

    path = video_path(name)
    fps = video_file_fps(str(path))
    cut = str(ladder.cut)
    costs = measure_edge_costs(model, cut, ("pixels", "features", "detections"), pixel_settings=pixel_settings(64.0),
                               fps=fps)
    budgets = budgets_from_costs(costs)
    log(f"{video_label(name)}: {fps:g} fps; edge costs {costs}; budgets {budgets}")
    clip = references(model, iter_source(path, limit=frames), cut)
    runs: dict[str, PartitionRun] = {}
    for partition, rate in [("detections", None)] + [(p, r) for r in rates for p in ("pixels", "features")]:
        candidate = round_trip(model, ladder, partition, rate, fps)
        run = evaluate_frames(model, clip, candidate, fps, partition, rate)
        runs[run_key(partition, rate)] = run
        log(f"  {run_key(partition, rate):14s} {run.kbps:7.1f} kbit/s changes {sum(run.changes):5d} "
            f"edge {run.edge_ms:.1f} ms/frame")
    choices: dict[str, str | None] = {}  # per cell, the run that is auto's: "auto <cell>" when it switched
    starts: dict[str, str | None] = {}  # per cell, the partition and rate auto started with
    probe_images = [image for image, _ in clip[:probe_frames]]
    if len(probe_images) < probe_frames:
        raise SystemExit(f"{video_label(name)} has {len(clip)} frames, fewer than --probe-frames {probe_frames}.")
    probe_cache: dict[Any, Any] = {}  # one clip: each partition and rate probed once, whatever the budget
    for budget_name, budget_ms in budgets.items():
        for restriction in RESTRICTIONS:
            for rate in rates:
                resolved = choose(model, curves, costs, fps, rate, budget_ms, restriction,
                                  probe_images=probe_images, ladder=ladder, probe_cache=probe_cache)
                cell = f"{budget_name}|{restriction or 'all'}|{rate:g}"
                key = None if resolved is None else run_key(resolved.plan.partition, resolved.plan.rate_kbps)
                if resolved is not None and key not in runs:  # auto chose a rate the singles did not run
                    candidate = round_trip(model, ladder, resolved.plan.partition, resolved.plan.rate_kbps, fps)
                    runs[key] = evaluate_frames(model, clip, candidate, fps, resolved.plan.partition,
                                                resolved.plan.rate_kbps)
                if resolved is not None and first_switch(resolved, runs[key].frame_bytes, restriction, fps) is not None:
                    # It switches at run time, as a streaming edge (and eval) would: run auto itself.
                    auto = AutoRoundtrip(resolved, lambda plan: round_trip(model, ladder, plan.partition,
                                                                           plan.rate_kbps, fps),
                                         partitions=restriction, fps=fps)
                    key = f"auto {cell}"
                    runs[key] = evaluate_frames(model, clip, auto, fps, "auto", rate)
                    log(f"  {key}: {auto.summary()}; {runs[key].kbps:.1f} kbit/s changes {sum(runs[key].changes)}")
                starts[cell] = None if resolved is None else run_key(resolved.plan.partition,
                                                                      resolved.plan.rate_kbps)
                choices[cell] = key
    probed = {f"{k[0]} {k[1]:g}" if k[1] is not None else k[0]: {"changes": list(v.changes), "bytes": list(v.bytes),
                                                                 "cpu_s": v.cpu_s}
              for k, v in probe_cache.items() if k != "reference"}
    return {"video": video_label(name), "fps": fps, "frames": len(runs["detections"].changes), "costs": costs,
            "budgets": budgets, "runs": {k: asdict(v) for k, v in runs.items()}, "choices": choices, "starts": starts,
            "probe_frames": probe_frames, "probed": probed}


def simulated_choices(result: dict[str, Any], curves, probe_frames: int) -> dict[str, str | None]:
    """Auto's choices with a `probe_frames`-frame probe (0: the curves alone) computed from the runs: a probe of
    partition P at rate R is the first K frames of P's run at R (round trips are causal and deterministic; the
    real probe's choices at the default K are in result["choices"], and `--report` checks they agree)."""
    from splitinfer.services.edge.partition_plan import NoFeasiblePlan, parse_partitions, plan
    from splitinfer.services.edge.scene_probe import ProbedPartition, SceneProbe, candidates, choose

    choices: dict[str, str | None] = {}
    for cell in result["choices"]:
        budget_name, restriction, rate_text = cell.split("|")
        allowed = parse_partitions(None if restriction == "all" else restriction)
        budgets = dict(uplink_kbps=float(rate_text), edge_budget_ms=result["budgets"][budget_name])
        try:
            if probe_frames == 0:
                chosen = plan(curves, result["costs"], partitions=allowed, **budgets)
            else:
                probed = {}
                for name, rate in candidates(curves, result["costs"], partitions=allowed, **budgets).items():
                    run = result["runs"][run_key(name, rate)]
                    probed[name] = ProbedPartition(name, rate, tuple(run["changes"][:probe_frames]),
                                                   tuple(run["frame_bytes"][:probe_frames]), result["fps"], 0.0)
                chosen = choose(curves, result["costs"], SceneProbe(probe_frames, probed, 0.0, 0.0),
                                partitions=allowed, **budgets)[0]
        except NoFeasiblePlan:
            choices[cell] = None
            continue
        choices[cell] = run_key(chosen.partition, chosen.rate_kbps)
    return choices


def fitting(result: dict[str, Any], budget_ms: float, rate: float, allowed: tuple[str, ...]) -> list[PartitionRun]:
    """The single partitions that fit the cell: edge cost within the budget; detections' achieved rate within the
    uplink (pixels and features hold the rate they are given)."""
    runs = {k: PartitionRun(**v) for k, v in result["runs"].items()}
    out = []
    for partition in allowed:
        if result["costs"][partition] > budget_ms:
            continue
        run = runs[run_key(partition, None if partition == "detections" else rate)]
        if partition == "detections" and run.kbps > rate:
            continue
        out.append(run)
    return out


def compare_cell(result: dict[str, Any], budget_name: str, restriction: str | None, rate: float) -> dict[str, Any]:
    """Auto's cell against the best fitting single partition: changes, the paired difference and its SE."""
    from splitinfer.dnn.evaluation import block_se

    allowed = ("pixels", "features") if restriction else ("pixels", "features", "detections")
    singles = fitting(result, result["budgets"][budget_name], rate, allowed)
    key = result["choices"][f"{budget_name}|{restriction or 'all'}|{rate:g}"]
    auto = PartitionRun(**result["runs"][key]) if key else None
    cell: dict[str, Any] = {"singles": singles, "auto": auto, "auto_key": key}
    if auto is not None:
        cell["over_uplink"] = auto.partition == "detections" and auto.kbps > rate
    if auto is None or not singles:
        return cell
    best = min(singles, key=lambda r: (sum(r.changes), r.kbps))
    difference = np.array(auto.changes, float) - np.array(best.changes, float)
    se = block_se(difference)
    cell |= {"best": best, "difference": float(difference.sum()), "se": se,
             "within": bool(difference.sum() <= se) if np.isfinite(se) else bool(difference.sum() <= 0)}
    return cell


def _changes(run: PartitionRun) -> str:
    from splitinfer.dnn.evaluation import block_se

    return f"{sum(run.changes)} ± {block_se(run.changes):.0f}"


def report(results: list[dict[str, Any]]) -> str:
    lines = ["| video | fps, frames | cost: pixels | features (cut 60) | detections | budget: whole model | head | "
             "pixels only |", "|---|---|---|---|---|---|---|---|"]
    for result in results:
        c, b = result["costs"], result["budgets"]
        lines.append(f"| {result['video']} | {result['fps']:g}, {result['frames']} | {c['pixels']:.1f} | "
                     f"{c['features']:.1f} | {c['detections']:.1f} | {b['whole model']:.1f} | {b['head']:.1f} | "
                     f"{b['pixels only']:.1f} |")
    lines += ["", "| video | partition | rate kbit/s | achieved kbit/s | B/frame | changes ± SE | edge CPU ms/frame |",
              "|---|---|---|---|---|---|---|"]
    for result in results:
        for run in (PartitionRun(**v) for v in result["runs"].values()):
            rate = "-" if run.rate_kbps is None else f"{run.rate_kbps:g}"
            lines.append(f"| {result['video']} | {run.partition} | {rate} | {run.kbps:.1f} | "
                         f"{run.bytes / len(run.changes):.0f} | {_changes(run)} | {run.edge_ms:.1f} |")
    lines += ["", "| video | edge budget | auto over | kbit/s | fitting singles: changes ± SE | auto chose: changes | "
              "auto - best fitting ± SE | within one SE |", "|---|---|---|---|---|---|---|---|"]
    for result in results:
        for budget_name in BUDGETS:
            for restriction in RESTRICTIONS:
                for rate in sorted({float(k.split("|")[2]) for k in result["choices"]}):
                    cell = compare_cell(result, budget_name, restriction, rate)
                    singles = ", ".join(f"{r.partition} {_changes(r)}" for r in cell["singles"]) or "none"
                    auto = cell["auto"]
                    chose = "nothing fits" if auto is None else \
                        f"{cell['auto_key']} ({auto.kbps:.1f} kbit/s): {sum(auto.changes)}"
                    diff, verdict = "-", "-" if auto is None else "no single fits"
                    if "best" in cell:
                        diff = f"{cell['difference']:+.0f} ± {cell['se']:.0f} (vs {cell['best'].partition})"
                        verdict = "yes" if cell["within"] else "**no**"
                    if cell.get("over_uplink"):
                        verdict = f"**no**: over the uplink ({auto.kbps:.1f} kbit/s)"
                    lines.append(f"| {result['video']} | {budget_name} | {restriction or 'all'} | {rate:g} | "
                                 f"{singles} | {chose} | {diff} | {verdict} |")
    return "\n".join(lines)


def verdict(result: dict[str, Any]) -> tuple[int, int, list[str]]:
    """Cells within one SE, cells compared, and the failing cells of one video's choices."""
    within, compared, failing = 0, 0, []
    for budget_name in BUDGETS:
        for restriction in RESTRICTIONS:
            for rate in sorted({float(k.split("|")[2]) for k in result["choices"]}):
                cell = compare_cell(result, budget_name, restriction, rate)
                if "best" not in cell:
                    continue
                compared += 1
                if cell["within"] and not cell.get("over_uplink"):
                    within += 1
                else:
                    failing.append(f"{budget_name}/{restriction or 'all'}/{rate:g}: {cell['auto_key']} "
                                   f"{cell['difference']:+.0f} ± {cell['se']:.0f} vs {cell['best'].partition}"
                                   + (" (over the uplink)" if cell.get("over_uplink") else ""))
    return within, compared, failing


def sweep(results: list[dict[str, Any]], curves, lengths: list[int]) -> str:
    """Per video and probe length K: cells within one SE of the best fitting partition (choices simulated from the
    runs' first K frames; the plan auto starts with, without its run-time switches), and whether the simulation
    reproduces the start of the run's own probe at its K."""
    lines = ["| video | probe frames K | cells within one SE | failing cells (auto - best ± SE) |",
             "|---|---|---|---|"]
    for result in results:
        run_k = result.get("probe_frames", 0)
        if simulated_choices(result, curves, run_k) != result.get("starts", result["choices"]):
            lines.append(f"| {result['video']} | {run_k} | the simulation does not reproduce the run's probe | |")
        for k in lengths:
            if k > result["frames"]:
                continue
            within, compared, failing = verdict(dict(result, choices=simulated_choices(result, curves, k)))
            lines.append(f"| {result['video']} | {k} | {within} of {compared} | {'; '.join(failing) or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON of the runs (written after each video)")
    parser.add_argument("--report", action="store_true", help="print the tables of an earlier run and exit")
    parser.add_argument("--merge", nargs="*", type=Path, default=[],
                        help="with --report: add the videos of these JSON files (e.g. one process per video)")
    parser.add_argument("--videos", nargs="+", default=["vtest", "Megamind", "tree"],
                        help="named videos (bench/rate_control.py) or paths; not the one that calibrated the curves")
    parser.add_argument("--frames", type=int, default=150, help="the first this many frames of each video")
    parser.add_argument("--rates", nargs="+", type=float, default=list(RATES_KBPS))
    parser.add_argument("--curves", default=None, help="partition curves (default: the ones shipped with the model)")
    parser.add_argument("--probe-frames", type=int, default=None,
                        help="auto's scene probe: the first this many frames of the clip (default: auto's, "
                        "services/edge/scene_probe.py DEFAULT_PROBE_FRAMES; 0: plan from the curves alone)")
    parser.add_argument("--sweep", nargs="+", type=int, default=[],
                        help="with --report: cells within one SE per video for each of these probe lengths K, from "
                        "the runs' first K frames (simulated_choices; 0: the curves alone)")
    args = parser.parse_args(argv)
    if args.report:
        from splitinfer.services.edge.auto_partition import load_curves

        results = [r for path in (args.out, *args.merge) for r in json.loads(path.read_text())]
        curves = load_curves("yolo-fastest-1.1-xl", args.curves)
        print(report(results))
        if args.sweep:
            print("\n" + sweep(results, curves, args.sweep))
        return 0
    import torch

    from splitinfer.codec.ladder import CodecLadder
    from splitinfer.dnn import load_model
    from splitinfer.services.edge.auto_partition import load_curves
    from splitinfer.services.profiles import packaged_profile

    torch.set_num_threads(1)  # as `splitinfer eval --threads 1`
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("splitinfer.edge").setLevel(logging.INFO)  # auto's plans and scene probes, on stderr
    model = load_model("yolo-fastest-1.1-xl", weights=DATA / "models" / "yolo-fastest-1.1")
    ladder = CodecLadder.load(packaged_profile(model.name, "ladder"))
    curves = load_curves(model.name, args.curves)
    from splitinfer.services.edge.scene_probe import DEFAULT_PROBE_FRAMES

    probe_frames = DEFAULT_PROBE_FRAMES if args.probe_frames is None else args.probe_frames
    results: list[dict[str, Any]] = []
    for name in args.videos:
        results.append(measure_video(model, ladder, curves, name, args.frames, tuple(args.rates),
                                     probe_frames=probe_frames))
        args.out.write_text(json.dumps(results))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
