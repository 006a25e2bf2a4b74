"""Partitions at equal budgets: pixels (x264 / x265 baselines) against features (rate control), and detections.

The protocol issue 19 measures against. For each video (named or a path; native frame rate, the first --frames
frames), the head runs once per frame and the unsplit model gives the reference detections. Then, at each budget:
- features: the real edge pipeline with rate control and the cloud's TemporalDecoder and tail
  (bench/rate_control.py's run_pipeline); bytes are the payloads;
- pixels: each baseline codes the whole clip offline with PyAV (bench/baselines/pixel_video.py) at the budget as
  its target bitrate, at the model's input size (320x320, resized as the edge does) and at the native size; the
  decoded pictures go through the whole model. Bytes are the elementary stream's packets. Baselines (fixed before
  any run): x264 medium two-pass, x264 veryfast tune zerolatency one-pass, x265 medium two-pass; each with our
  key-frame interval (keyint 30 = the video path's intra period) and with the encoder's default (keyint not set:
  250 for both);
- detections: the whole model on the edge, bytes the serialized EdgeDetections (no change by construction).
Detection changes are lost + added against the unsplit model on the original frames (services/fidelity.py); each
difference against features at the same budget gets a standard error by block jackknife over 30-frame blocks.

Edge CPU per frame: a separate phase times each partition's edge work on the same frames in process CPU time
(one thread), interleaved: every round runs each item once, in a rotated order; the table gives the median and
range over rounds. Items: each pixel baseline's encode (both passes for two-pass) at --timing-kbps, the head at
the ladder's cut, the feature codec with rate control at --timing-kbps, the whole model.

    python bench/partition.py --out /tmp/partition.json --videos shared tree vtest Megamind --frames 150
    python bench/partition.py --out /tmp/partition.json --report   # the tables for docs/RESULTS.md
    python bench/partition.py --out /tmp/p_vtest.json --videos vtest   # one process per video, then:
    python bench/partition.py --out /tmp/p_shared.json --report --merge /tmp/p_vtest.json
    python bench/partition.py --out /tmp/p.json --videos vtest --rdo-lambdas 0.05 --baselines "x264 medium 2-pass" \
        --sizes 320 --timing-rounds 0    # also features with every ladder point's rdo_lambda set to 0.05

Elsewhere (issue 18 item 5): the auto planner at each edge budget, against the best single partition, is
bench/auto_partition.py; latency per partition and for auto, live over a tbf-shaped link in network namespaces,
is bench/shaped_link.py (senders pixels, features, detections, auto). Both tables are in docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines.pixel_video import code_clip, encode_clip  # noqa: E402
from rate_control import (DATA, Run, block_se, heads_and_references, native_fps, run_pipeline,  # noqa: E402
                          video_label, video_path)

BUDGETS_KBPS = (32.0, 64.0, 128.0, 256.0)
OUR_KEYINT = 30  # the video path's intra period before codec v3 (now 250, the encoders' default: the "default" rows)
JACKKNIFE_BLOCK = 30
# name -> (codec, preset, passes, tune)
BASELINES = {
    "x264 medium 2-pass": ("libx264", "medium", 2, None),
    "x264 veryfast zerolatency": ("libx264", "veryfast", 1, "zerolatency"),
    "x265 medium 2-pass": ("libx265", "medium", 2, None),
}
SIZES = ("320", "native")
KEYINTS = ("ours", "default")


def pictures_for(model, frames, size: str) -> list[np.ndarray]:
    """What a pixel baseline codes: each frame resized to the model's input (as the edge does) or its even crop."""
    import cv2

    from splitinfer.services.pixels import even_size

    height, width = model.input_size
    out = []
    for frame, _, _, _ in frames:
        image = frame.image
        h, w = image.shape[:2]
        if size == "320":
            out.append(cv2.resize(image, even_size(width, height), interpolation=cv2.INTER_LINEAR))
        else:
            ew, eh = even_size(w, h)
            out.append(np.ascontiguousarray(image[:eh, :ew]))
    return out


def run_baseline(model, frames, pictures, video: str, name: str, size: str, keyint: str, budget_kbps: float,
                 fps: float) -> Run:
    """Code the clip with one baseline, run the whole model on every decoded picture, count changes."""
    import torch

    from splitinfer.services.fidelity import compare
    from splitinfer.services.whole_model import network_input, run_whole

    codec, preset, passes, tune = BASELINES[name]
    clip = code_clip(pictures, codec=codec, preset=preset, kbps=budget_kbps, fps=fps,
                     keyint=OUR_KEYINT if keyint == "ours" else None, passes=passes, tune=tune)
    run = Run(video, f"pixels|{name}|{size}|{keyint}|{budget_kbps:g}", len(frames), len(frames) / fps, clip.bytes,
              0.0, fps=fps)
    with torch.no_grad():
        for (frame, _, _, reference), picture in zip(frames, clip.pictures):
            height, width = frame.image.shape[:2]
            x, info = network_input(model, picture, width, height)
            fidelity = compare(reference, model.postprocess(run_whole(model, torch.from_numpy(x)), info))
            run.changes.append(fidelity.lost + fidelity.added)
    run.kbps = 8 * run.bytes / run.seconds / 1000
    run.encode_ms = 1000 * clip.encode_cpu_s / len(frames)
    return run


def run_live_pixels(model, frames, video: str, budget_kbps: float, fps: float) -> Run:
    """The live edge's pixel stream (--live): PixelPipeline (x264 veryfast zerolatency, VBV, keyint ours) and the
    cloud's PixelDecoder, at the model's input size."""
    from splitinfer.services.edge.partitions import PixelRoundtrip
    from splitinfer.services.fidelity import compare
    from splitinfer.services.pixels import PixelSettings

    roundtrip = PixelRoundtrip(model, PixelSettings(preset="veryfast", crf=None, target_kbps=budget_kbps,
                                                    key_interval=OUR_KEYINT), fps=fps)
    run = Run(video, f"pixels|edge live x264 veryfast|320|ours|{budget_kbps:g}", len(frames), len(frames) / fps, 0,
              0.0, fps=fps)
    for frame, _, _, reference in frames:
        outputs, info, nbytes = roundtrip(frame.image)
        fidelity = compare(reference, model.postprocess(outputs, info))
        run.changes.append(fidelity.lost + fidelity.added)
        run.bytes += nbytes
    run.kbps = 8 * run.bytes / run.seconds / 1000
    run.encode_ms = 1000 * roundtrip.encode_cpu_s / max(len(frames), 1)
    return run


def run_detections(frames, video: str, fps: float) -> Run:
    """The detections partition: the edge's own detections, serialized as the frame carries them."""
    from splitinfer.v1 import inference_pb2

    run = Run(video, "detections", len(frames), len(frames) / fps, 0, 0.0, fps=fps)
    for _, _, _, reference in frames:
        message = inference_pb2.EdgeDetections(detections=[
            inference_pb2.Detection(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, class_id=d.class_id, label=d.label,
                                    score=d.score) for d in reference])
        run.bytes += message.ByteSize()
        run.changes.append(0)
    run.kbps = 8 * run.bytes / run.seconds / 1000
    return run


def edge_cpu(model, ladder, elements: int, frames, pictures: dict[str, list[np.ndarray]], video: str, fps: float,
             kbps: float, rounds: int) -> list[dict]:
    """CPU ms/frame of each partition's edge work, interleaved over `rounds` rounds in a rotated order."""
    import torch

    from splitinfer.services.edge.client import HeadOutput
    from splitinfer.services.edge.pipeline import EdgePipeline
    from splitinfer.services.edge.rate_control import RateController
    from splitinfer.services.whole_model import run_whole

    split = model.split(ladder.cut)
    inputs = [model.preprocess(frame.image)[0] for frame, _, _, _ in frames]

    def pixel(name: str, size: str):
        codec, preset, passes, tune = BASELINES[name]
        return lambda: encode_clip(pictures[size], codec=codec, preset=preset, kbps=kbps, fps=fps, keyint=None,
                                   passes=passes, tune=tune)

    def head():
        with torch.no_grad():
            for x in inputs:
                split.head(x)

    def whole():
        with torch.no_grad():
            for x in inputs:
                run_whole(model, x)

    def codec():
        pipeline = EdgePipeline(model, ladder.points[-1], rate=RateController(ladder, elements, kbps * 1000))
        for frame, tensors, _, _ in frames:
            pipeline.encode(HeadOutput(frame, tensors, {}))

    items = {f"pixels {name} {size}": pixel(name, size) for name in BASELINES for size in pictures}
    items |= {f"features head (cut {ladder.cut})": head, f"features codec + rate control": codec,
              "detections (whole model)": whole}
    times: dict[str, list[float]] = {label: [] for label in items}
    labels = list(items)
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            started = time.process_time()
            items[label]()
            times[label].append(1000 * (time.process_time() - started) / len(frames))
    return [{"video": video, "item": label, "kbps": kbps, "ms": values} for label, values in times.items()]


def measure(args) -> tuple[list[Run], list[dict]]:
    import torch

    from splitinfer.codec.ladder import CodecLadder
    from splitinfer.dnn import load_model
    from splitinfer.services.edge.pipeline import EdgePipeline
    from splitinfer.services.edge.rate_control import RateController
    from splitinfer.services.profiles import packaged_profile

    torch.set_num_threads(1)
    model = load_model("yolo-fastest-1.1-xl", weights=DATA / "models" / "yolo-fastest-1.1")
    ladder = CodecLadder.load(args.ladder or packaged_profile(model.name, "ladder"))
    elements = sum(math.prod(spec.shape) for spec in model.split(ladder.cut).tensors)
    runs: list[Run] = []
    timings: list[dict] = []
    for name in args.videos:
        path, video = video_path(name), video_label(name)
        fps = native_fps(path)
        frames = heads_and_references(model, ladder.cut, path, math.inf, None, args.frames)
        pictures = {size: pictures_for(model, frames, size) for size in args.sizes}
        print(f"{video}: {len(frames)} frames at {fps:g} fps", flush=True)
        runs.append(run_detections(frames, video, fps))
        _log(runs, timings, args.out)
        for budget in args.budgets:
            pipeline = EdgePipeline(model, ladder.points[-1], rate=RateController(ladder, elements, budget * 1000))
            runs.append(run_pipeline(model, pipeline, frames, video, f"features {budget:g}", fps))
            runs[-1].intra_period = ladder.points[0].intra_period
            _log(runs, timings, args.out)
            for lam in args.rdo_lambdas:
                variant = with_rdo_lambda(ladder, lam)
                pipeline = EdgePipeline(model, variant.points[-1],
                                        rate=RateController(variant, elements, budget * 1000))
                runs.append(run_pipeline(model, pipeline, frames, video, f"features rdo_lambda={lam:g} {budget:g}",
                                         fps))
                runs[-1].intra_period = variant.points[0].intra_period
                _log(runs, timings, args.out)
            if args.live:
                runs.append(run_live_pixels(model, frames, video, budget, fps))
                _log(runs, timings, args.out)
            for baseline in args.baselines:
                for size in args.sizes:
                    for keyint in KEYINTS:
                        runs.append(run_baseline(model, frames, pictures[size], video, baseline, size, keyint, budget,
                                                 fps))
                        _log(runs, timings, args.out)
        if args.timing_rounds:
            timings += edge_cpu(model, ladder, elements, frames, pictures, video, fps, args.timing_kbps,
                                args.timing_rounds)
            _log(runs, timings, args.out)
    return runs, timings


def with_rdo_lambda(ladder, lam: float):
    """The ladder with every point's rdo_lambda set to `lam` (the shipped ladder's before/after comparison)."""
    from splitinfer.codec.ladder import CodecLadder

    return CodecLadder([point.replace(rdo_lambda=lam) for point in ladder.points], figures=ladder.figures)


def _log(runs: list[Run], timings: list[dict], out: Path) -> None:
    run = runs[-1]
    print(f"  {run.video:8s} {run.setting:45s} {run.kbps:7.1f} kbit/s {run.bytes / run.frames:7.0f} B/frame "
          f"changes {sum(run.changes):5d} encode {run.encode_ms:.2f} ms", flush=True)
    out.write_text(json.dumps({"runs": [asdict(r) for r in runs], "timings": timings}))


def report(runs: list[Run], timings: list[dict], selection: tuple[str, ...]) -> str:
    lines = ["| video | set | budget kbit/s | partition | size | key interval | achieved kbit/s | B/frame | changes | "
             "vs features ± SE |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        where = "selection" if run.video in selection else "report"
        if run.setting == "detections":
            lines.append(f"| {run.video} | {where} | any | detections (whole model on the edge) | | | {run.kbps:.1f} | "
                         f"{run.bytes / run.frames:.0f} | {sum(run.changes)} | |")
            continue
        budget = float(run.setting.split("|")[-1] if "|" in run.setting else run.setting.split()[-1])
        features = next(r for r in runs if r.video == run.video and r.setting == f"features {budget:g}")
        if run.setting.startswith("features "):
            variant = " ".join(run.setting.split()[1:-1])
            label = "**features (cut 60, rate control)**" + (f" {variant}" if variant else "")
            versus = ""
            if run is not features:
                difference = np.array(run.changes, dtype=float) - np.array(features.changes, dtype=float)
                versus = f"{int(difference.sum()):+d} ± {block_se(difference, JACKKNIFE_BLOCK):.0f}"
            lines.append(f"| {run.video} | {where} | {budget:g} | {label} | | {run.intra_period or 30} | "
                         f"{run.kbps:.1f} | {run.bytes / run.frames:.0f} | {sum(run.changes)} | {versus} |")
            continue
        _, name, size, keyint, _ = run.setting.split("|")
        difference = np.array(run.changes, dtype=float) - np.array(features.changes, dtype=float)
        versus = f"{int(difference.sum()):+d} ± {block_se(difference, JACKKNIFE_BLOCK):.0f}"
        keyed = f"{OUR_KEYINT} (ours)" if keyint == "ours" else "250 (default)"
        lines.append(f"| {run.video} | {where} | {budget:g} | {name} | {size} | {keyed} | {run.kbps:.1f} | "
                     f"{run.bytes / run.frames:.0f} | {sum(run.changes)} | {versus} |")
    lines += ["", summary(runs, selection)]
    if timings:
        lines += ["", "| video | edge work | kbit/s | CPU ms/frame, median (min-max) over rounds |", "|---|---|---|---|"]
        for t in timings:
            lines.append(f"| {t['video']} | {t['item']} | {t['kbps']:g} | {statistics.median(t['ms']):.2f} "
                         f"({min(t['ms']):.2f}-{max(t['ms']):.2f}) |")
    return "\n".join(lines)


def summary(runs: list[Run], selection: tuple[str, ...]) -> str:
    """Per video and budget: features against the pixel baseline with the fewest changes (of all, and of x264 medium
    two-pass); the difference is features minus baseline (negative: features win), SE by block jackknife. Picking
    the best of twelve baselines after the fact favours pixels."""
    lines = ["| video | set | budget kbit/s | features | features: kbit/s, changes | best pixels (any): setting, kbit/s, "
             "changes | features - best ± SE | best x264 medium 2-pass: size, key, changes | features - it ± SE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for features in (r for r in runs if r.setting.startswith("features ")):
        budget = features.setting.split()[-1]
        pixels = [r for r in runs if r.video == features.video and r.setting.startswith("pixels|")
                  and r.setting.endswith(f"|{budget}")]
        if not pixels:
            continue
        cells = []
        for group in (pixels, [r for r in pixels if "x264 medium 2-pass" in r.setting]):
            if not group:
                cells.append("not run | ")
                continue
            best = min(group, key=lambda r: sum(r.changes))
            d = np.array(features.changes, float) - np.array(best.changes, float)
            _, name, size, keyint, _ = best.setting.split("|")
            label = f"{name} {size} {keyint}, {best.kbps:.1f}" if not cells else f"{size} {keyint}"
            cells.append(f"{label}, {sum(best.changes)} | {d.sum():+.0f} ± {block_se(d, JACKKNIFE_BLOCK):.0f}")
        where = "selection" if features.video in selection else "report"
        variant = " ".join(features.setting.split()[1:-1]) or "as shipped"
        lines.append(f"| {features.video} | {where} | {budget} | {variant} | {features.kbps:.1f}, "
                     f"{sum(features.changes)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", action="store_true", help="print the tables of an earlier run and exit")
    parser.add_argument("--merge", nargs="*", type=Path, default=[],
                        help="with --report: add the runs of these JSON files (e.g. one process per video)")
    parser.add_argument("--videos", nargs="+", default=["shared"], help="named videos (bench/rate_control.py) or paths")
    parser.add_argument("--selection", nargs="+", default=["shared", "tree"],
                        help="videos that selected settings (marked as such in the table; the others report)")
    parser.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS_KBPS))
    parser.add_argument("--frames", type=int, default=150, help="the first this many frames of each video")
    parser.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=list(BASELINES))
    parser.add_argument("--ladder", default=None, help="codec ladder (default: the one shipped with the model)")
    parser.add_argument("--rdo-lambdas", nargs="*", type=float, default=[],
                        help="also run features with every ladder point's rdo_lambda set to each of these")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES),
                        help="pixel baselines' picture sizes")
    parser.add_argument("--live", action="store_true", help="also the live edge's pixel stream (PixelPipeline)")
    parser.add_argument("--timing-rounds", type=int, default=3, help="rounds of the edge CPU phase (0: skip it)")
    parser.add_argument("--timing-kbps", type=float, default=64.0)
    args = parser.parse_args()
    if args.report:
        data = json.loads(args.out.read_text())
        runs, timings = [Run(**r) for r in data["runs"]], data["timings"]
        for extra in args.merge:  # runs of other videos made by other processes
            more = json.loads(extra.read_text())
            runs, timings = runs + [Run(**r) for r in more["runs"]], timings + more["timings"]
    else:
        runs, timings = measure(args)
    print(report(runs, timings, tuple(args.selection)))


if __name__ == "__main__":
    main()
