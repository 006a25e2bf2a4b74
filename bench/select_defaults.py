"""Choose a model's default codec profile on the selection half and report it on the held-out report half.

The protocol of docs/PROTOCOL.md: clip ranges and levels are designed on coco-mini/calib2017; every candidate
is scored on the selection half (bench/heldout.py); the rule picks the candidate with the fewest bytes/frame
whose accuracy change (AP50 or top-1, paired with the uncompressed model) is at least --target points; only
the chosen candidate and the shipped profile are then scored on the report half, with the standard error of
each paired difference (jackknife over images for AP50, the paired-proportion SE for top-1).

    python bench/select_defaults.py --model efficientnet-lite0
    python bench/select_defaults.py --model yolo-fastest-1.1-xl
    python bench/select_defaults.py --model yolo-fastest-1.1-xl --shipped-only   # the shipped profile on both halves
    python bench/select_defaults.py --video-results SEL.json   # the video rule on rate_accuracy.py --parts video output

Video: the rule reads a `bench/rate_accuracy.py --parts video` result of the selection videos and picks the
temporal setting with the fewest bytes/frame (mean over the videos) whose lost + added (summed) is below JPEG
Q90's on the same frames; lost + added on correlated frames has no standard error here.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from heldout import IMAGENET_SALT, IMAGES_SALT, pick
from common import DATA, REPO, calibration_histogram
from rate_accuracy import EFFNET, YOLO, Evaluator

from splitinfer.codec import CodecProfile, Quantizer, decode, default_coder, encode

# Candidates: (cut, levels, clip scale, ECSQ (lam, weight power) or None). The study's grids around its choices.
CANDIDATES = {
    EFFNET: [(cut, n, s, None) for cut in ("blocks.3", "blocks.2") for n in (4, 5, 6, 7, 8) for s in (1.0, 1.5, 2.0, 2.5)],
    YOLO: [(cut, n, s, None) for cut in ("80", "60") for n in (5, 7, 9, 11, 13) for s in (1.5, 2.0)]
    + [(cut, 9, 1.5, (lam, 2.0)) for cut in ("80", "60") for lam in (1.0, 2.0, 3.0)],
}


def _quantizer(model, cut: str, levels: int, scale: float, ecsq: tuple[float, float] | None) -> Quantizer:
    """What `splitinfer calibrate --clip mse --clip-scale S [--symmetric for odd N] [--quantizer ecsq]` designs."""
    from splitinfer.codec.clip_range import mse_optimal_range
    from splitinfer.codec.ecsq import design_ecsq

    hist, _ = _HISTOGRAMS.setdefault((model.name, cut), calibration_histogram(model, cut))
    base = mse_optimal_range(hist, levels, symmetric=levels % 2 == 1)
    low, high = base.clip_min * scale, base.clip_max * scale
    if ecsq is None:
        return Quantizer.uniform(low, high, levels)
    return design_ecsq(hist, levels, low, high, lam=ecsq[0], weight_power=ecsq[1]).quantizer


_HISTOGRAMS: dict = {}


def _score(evaluator: Evaluator, cut: str, quantizer: Quantizer, coder=None) -> dict:
    coder = coder or default_coder(quantizer)
    heads = evaluator.heads(cut)
    sizes, decoded = [], []
    for h in heads:
        coded = {k: encode(v[0], quantizer, coder=coder) for k, v in h.items()}
        sizes.append(sum(c.nbytes for c in coded.values()))
        decoded.append({k: decode(c)[None] for k, c in coded.items()})
    scores = evaluator.score(evaluator.run_tail(cut, decoded))
    scores["bytes"] = float(np.mean(sizes))
    return scores


def _evaluator(model, subset: str) -> Evaluator:
    from splitinfer.dnn.eval_images import image_files, iter_folder

    if model.task == "detection":
        folder = DATA / "coco-mini" / "val2017"
        names = pick([f.name for f in image_files(folder)], subset, IMAGES_SALT)
        return Evaluator(model, list(iter_folder(folder, names)),
                         annotations=DATA / "coco-mini" / "annotations" / "instances_val2017.json")
    folder = DATA / "imagenet-sample"
    with (folder / "labels.csv").open(newline="") as stream:
        labels = {row["file"]: int(row["class_index"]) for row in csv.DictReader(stream)}
    return Evaluator(model, list(iter_folder(folder, pick(list(labels), subset, IMAGENET_SALT))), labels=labels)


def _line(name: str, s: dict) -> str:
    return (f"| {name} | {s['bytes']:,.0f} | {100 * s['accuracy']:.1f} | {100 * s['accuracy_delta']:+.1f} ± "
            f"{100 * s['accuracy_delta_se']:.1f} | {s['lost']} / {s['added']} |")


def _label(candidate) -> str:
    cut, levels, scale, ecsq = candidate
    kind = "uniform" if ecsq is None else f"ECSQ lam {ecsq[0]:g} w {ecsq[1]:g}"
    return f"cut {cut}, {levels} {kind} levels, s={scale:g}"


def _candidates(model_name: str, cuts: Sequence[str] | None) -> Iterator[tuple]:
    for c in CANDIDATES[model_name]:
        if not cuts or c[0] in cuts:
            yield c


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CANDIDATES), default=EFFNET)
    parser.add_argument("--target", type=float, default=-1.0,
                        help="least accuracy change in points on the selection half (AP50 or top-1)")
    parser.add_argument("--cuts", default="", help="restrict the candidates to these cuts (comma-separated)")
    parser.add_argument("--video-results", type=Path, default=None,
                        help="apply the video rule to this rate_accuracy.py --parts video result (selection videos)")
    parser.add_argument("--shipped-only", action="store_true",
                        help="score only the shipped profile, on both halves (a check after regenerating it)")
    args = parser.parse_args(argv)
    if args.video_results is not None:
        return select_video(args.video_results)
    import torch

    from splitinfer.dnn import load_model
    from splitinfer.dnn.registry import get_spec

    torch.set_num_threads(1)
    weights = DATA / "models" / "yolo-fastest-1.1" if args.model == YOLO else None
    model = load_model(args.model, weights=weights)
    shipped_path = REPO / "dnn" / get_spec(args.model).default_profile
    shipped = CodecProfile.load(shipped_path)

    if args.shipped_only:
        for subset in ("selection", "report"):
            evaluator = _evaluator(model, subset)
            print(f"\n{subset} half, {len(evaluator.samples)} images, uncompressed {_reference(evaluator):.1f} %\n")
            print("| profile | bytes/frame | accuracy % | change (points) ± SE | lost / added |\n|---|---|---|---|---|")
            print(_line(f"shipped {shipped_path.name}", _score(evaluator, shipped.cut, shipped.quantizer, shipped.coder)))
        return 0
    selection = _evaluator(model, "selection")
    print(f"{args.model}: selection half {len(selection.samples)} images\n")
    print("| candidate (selection half) | bytes/frame | accuracy % | change (points) ± SE | lost / added |\n"
          "|---|---|---|---|---|")
    scored = []
    for candidate in _candidates(args.model, [c for c in args.cuts.split(",") if c]):
        result = _score(selection, candidate[0], _quantizer(model, *candidate))
        scored.append((candidate, result))
        print(_line(_label(candidate), result), flush=True)
    shipped_selection = _score(selection, shipped.cut, shipped.quantizer, shipped.coder)
    print(_line(f"shipped {shipped_path.name}", shipped_selection))
    passing = [(c, r) for c, r in scored if 100 * r["accuracy_delta"] >= args.target]
    if not passing:
        print(f"\nno candidate keeps the accuracy change >= {args.target} points on the selection half")
        return 1
    chosen, _ = min(passing, key=lambda cr: cr[1]["bytes"])
    print(f"\nrule: fewest bytes/frame with change >= {args.target:g} points on the selection half -> {_label(chosen)}")

    report = _evaluator(model, "report")
    print(f"\nreport half {len(report.samples)} images (never used for a choice)\n")
    print("| profile (report half) | bytes/frame | accuracy % | change (points) ± SE | lost / added |\n|---|---|---|---|---|")
    print(_line(f"chosen: {_label(chosen)}", _score(report, chosen[0], _quantizer(model, *chosen))))
    print(_line(f"shipped {shipped_path.name}", _score(report, shipped.cut, shipped.quantizer, shipped.coder)))
    print(f"\nuncompressed accuracy: selection {_reference(selection):.1f} %, report {_reference(report):.1f} %")
    return 0


def select_video(path: Path, period: int = 30) -> int:
    """Apply the video rule to a rate_accuracy.py result file of the selection videos; print the table and choice."""
    import json

    points = json.loads(path.read_text())
    videos = sorted({p.get("data", "") or "shared video" for p in points if p["part"] == "video"})
    jpeg = [p for p in points if p["part"] == "video" and p["family"] == "jpeg" and p["setting"] == "Q=90"]
    if len(jpeg) != len(videos):
        print(f"{path} needs JPEG Q=90 on every video ({len(jpeg)} of {len(videos)})")
        return 1
    budget = sum(p["lost"] + p["added"] for p in jpeg)
    settings: dict[str, list[dict]] = {}
    for p in points:
        if p["part"] == "video" and p["coder"] == f"TEMPORAL_CONTEXTS/K={period}":
            settings.setdefault(f"{p['family']} {p['setting']}", []).append(p)
    print(f"selection videos: {', '.join(videos)}; JPEG Q90: {np.mean([p['bytes_per_frame'] for p in jpeg]):,.0f} "
          f"B/frame, {budget} lost + added\n")
    print(f"| setting (intra every {period}) | bytes/frame (mean) | lost + added (sum) |\n|---|---|---|")
    rows = []
    for name, group in sorted(settings.items()):
        if len(group) != len(videos):
            continue
        row = (name, float(np.mean([p["bytes_per_frame"] for p in group])), sum(p["lost"] + p["added"] for p in group))
        rows.append(row)
        print(f"| {row[0]} | {row[1]:,.0f} | {row[2]} |")
    passing = [r for r in rows if r[2] < budget]
    if not passing:
        print("\nno setting has fewer lost + added than JPEG Q90")
        return 1
    chosen = min(passing, key=lambda r: r[1])
    print(f"\nrule: fewest bytes/frame with lost + added < JPEG Q90's ({budget}) -> {chosen[0]}")
    return 0


def _reference(evaluator: Evaluator) -> float:
    return 100 * (evaluator.reference_ap50 if evaluator.coco is not None else evaluator.reference_top1)


if __name__ == "__main__":
    sys.exit(main())
