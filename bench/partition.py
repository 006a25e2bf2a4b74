"""Partitions at equal budgets, first round: pixels (H.264) against features (rate control), and detections.

For each video (decimated to about 10 frames/s, at most --seconds of it) and each budget, the real edge code
codes every frame and the real cloud code decodes it: features through the edge pipeline with rate control and
the cloud's TemporalDecoder and tail (bench/rate_control.py's run_pipeline); pixels through the edge's
PixelPipeline (libx264, tune zerolatency, at the model's input size, key frame every 30 frames like our intra
period, target bitrate = the budget) and the cloud's PixelDecoder and whole model; detections as the edge sends
them (the whole model on the edge: no change by construction, bytes are the serialized detections). Detection
changes are lost + added against the unsplit model on the original frames (services/fidelity.py); each
difference against features at the same budget gets a standard error from 1-second blocks.
No setting here was chosen by looking at these figures (presets and key interval fixed beforehand).

    python bench/partition.py --out /tmp/partition.json           # run (minutes on 2 cores)
    python bench/partition.py --out /tmp/partition.json --report  # the table for docs/RESULTS.md

Left for the next round (issue 18): the auto planner, edge CPU budgets, latency, x265, native size, more videos.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rate_control import DATA, FPS, VIDEOS, Run, block_se, heads_and_references, run_pipeline  # noqa: E402

BUDGETS_KBPS = (32.0, 64.0, 128.0, 256.0)
PRESETS = ("veryfast", "medium")
KEY_INTERVAL = 30


def run_pixels(model, frames, video: str, budget_kbps: float, preset: str) -> Run:
    """Code every frame with the edge's PixelPipeline, decode with the cloud's PixelDecoder, run the whole model."""
    from splitinfer.services.edge.partitions import PixelRoundtrip
    from splitinfer.services.fidelity import compare
    from splitinfer.services.pixels import PixelSettings

    roundtrip = PixelRoundtrip(model, PixelSettings(preset=preset, crf=None, target_kbps=budget_kbps,
                                                    key_interval=KEY_INTERVAL), fps=FPS)
    run = Run(video, f"pixels {preset} {budget_kbps:g}", 0, 0.0, 0, 0.0)
    for frame, _, _, reference in frames:
        outputs, info, nbytes = roundtrip(frame.image)
        fidelity = compare(reference, model.postprocess(outputs, info))
        run.changes.append(fidelity.lost + fidelity.added)
        run.bytes += nbytes
    run.frames = len(frames)
    run.seconds = len(frames) / FPS
    run.kbps = 8 * run.bytes / run.seconds / 1000
    run.encode_ms = 1000 * roundtrip.encode_cpu_s / max(len(frames), 1)
    return run


def run_detections(frames, video: str) -> Run:
    """The detections partition: the edge's own detections, serialized as the frame carries them."""
    from splitinfer.v1 import inference_pb2

    run = Run(video, "detections", len(frames), len(frames) / FPS, 0, 0.0)
    for _, _, _, reference in frames:
        message = inference_pb2.EdgeDetections(detections=[
            inference_pb2.Detection(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, class_id=d.class_id, label=d.label,
                                    score=d.score) for d in reference])
        run.bytes += message.ByteSize()
        run.changes.append(0)
    run.kbps = 8 * run.bytes / run.seconds / 1000
    return run


def measure(args) -> list[Run]:
    import torch

    from splitinfer.codec.ladder import CodecLadder
    from splitinfer.dnn import load_model
    from splitinfer.services.edge.pipeline import EdgePipeline
    from splitinfer.services.edge.rate_control import RateController
    from splitinfer.services.profiles import packaged_profile

    torch.set_num_threads(1)
    model = load_model("yolo-fastest-1.1-xl", weights=DATA / "models" / "yolo-fastest-1.1")
    ladder = CodecLadder.load(packaged_profile(model.name, "ladder"))
    elements = sum(math.prod(spec.shape) for spec in model.split(ladder.cut).tensors)
    runs: list[Run] = []
    for video in args.videos:
        frames = heads_and_references(model, ladder.cut, VIDEOS[video], args.seconds)
        print(f"{video}: {len(frames)} frames at {FPS:g} fps", flush=True)
        runs.append(run_detections(frames, video))
        _log(runs, args.out)
        for budget in args.budgets:
            pipeline = EdgePipeline(model, ladder.points[-1], rate=RateController(ladder, elements, budget * 1000))
            runs.append(run_pipeline(model, pipeline, frames, video, f"features {budget:g}"))
            _log(runs, args.out)
            for preset in PRESETS:
                runs.append(run_pixels(model, frames, video, budget, preset))
                _log(runs, args.out)
    return runs


def _log(runs: list[Run], out: Path) -> None:
    run = runs[-1]
    print(f"  {run.video:8s} {run.setting:22s} {run.kbps:7.1f} kbit/s {run.bytes / run.frames:7.0f} B/frame "
          f"changes {sum(run.changes):5d} encode {run.encode_ms:.2f} ms", flush=True)
    out.write_text(json.dumps([asdict(r) for r in runs]))


def report(runs: list[Run]) -> str:
    lines = ["| video | budget kbit/s | partition | achieved kbit/s | B/frame | changes | vs features ± SE | "
             "edge encode ms/frame (CPU) |", "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        if run.setting == "detections":
            lines.append(f"| {run.video} | any | detections | {run.kbps:.1f} | {run.bytes / run.frames:.0f} | "
                         f"{sum(run.changes)} | | (whole model) |")
            continue
        kind, *rest = run.setting.split()
        budget = float(rest[-1])
        features = next(r for r in runs if r.video == run.video and r.setting == f"features {budget:g}")
        difference = np.array(run.changes, dtype=float) - np.array(features.changes, dtype=float)
        versus = "" if run is features else f"{int(difference.sum()):+d} ± {block_se(difference):.0f}"
        name = "features (cut 60, ladder)" if kind == "features" else f"pixels (x264 {rest[0]})"
        lines.append(f"| {run.video} | {budget:g} | {name} | {run.kbps:.1f} | {run.bytes / run.frames:.0f} | "
                     f"{sum(run.changes)} | {versus} | {run.encode_ms:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", action="store_true", help="print the table of an earlier run and exit")
    parser.add_argument("--videos", nargs="+", default=["shared"], choices=sorted(VIDEOS))
    parser.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS_KBPS))
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    runs = [Run(**r) for r in json.loads(args.out.read_text())] if args.report else measure(args)
    print(report(runs))


if __name__ == "__main__":
    main()
