"""Prototype for rate-distortion optimized temporal quantization (issue 19 item 2), on real bytes and detections.

    python bench/prototypes/rdo_prototype.py --out /tmp/rdo_sel.json --videos shared tree      # selection
    python bench/prototypes/rdo_prototype.py --out /tmp/rdo_sel.json --report                  # tables

Real Yolo-Fastest-1.1-XL head tensors at the ladder's cut (the first --frames frames of each video at its native
frame rate), coded by TemporalEncoder at the cheap end of the shipped ladder (quantizer and intra period of each
point) in these variants; the decoder and the bitstream are unchanged, only the levels sent differ:
- `ladder`: the point's quantizer and hysteresis margin with RDO off (rdo_lambda 0, the ladder before RDO): the
  baseline;
- `margin M`: hysteresis margin M at every point (the fixed-margin alternative);
- `rdo L`: the point's margin, then rate-distortion refinement with lambda L (codec/_kernels.py `_rdo_refine`:
  an element keeps its reference level, and a plane is skipped whole, where the squared error that adds, in
  steps, is at most L times the inter bits saved, estimated from the bins of TEMPORAL_CONTEXTS v2 with one change
  probability per tensor);
- `rdo L w`: the same, the squared error weighted per channel by the tail's sensitivity: the mean squared gradient
  of the detection scores (sigmoid objectness times the best class probability, summed) with respect to that
  channel, on the calibration images (coco-mini calib2017), normalized to mean 1.
Bytes are the real payloads. Detection changes are lost + added of the tail's detections on the decoded levels
against the unsplit model (services/fidelity.py). Equal rate: the `ladder` curve's changes are interpolated (linear
in log rate) to each run's rate (refresh_prototype.py's at_rate), the paired difference gets a standard error by
block jackknife over 30-frame blocks; the summary adds the differences over the points inside the ladder curve.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rate_control import DATA, block_se  # noqa: E402
from refresh_prototype import JACKKNIFE_BLOCK, at_rate, shipped_model_and_ladder, sweep, sweep_arguments  # noqa: E402

CALIBRATION = DATA / "coco-mini" / "calib2017"


def sensitivity(model, cut: str, images: int) -> dict[str, np.ndarray]:
    """Tensor name -> per-channel weights (dnn.calibration.channel_sensitivity on the first calibration images)."""
    from splitinfer.dnn.calibration import channel_sensitivity, collect_calibration

    calibration = collect_calibration(model, cut, CALIBRATION, max_images=images, progress=False)
    return channel_sensitivity(model, calibration, images)


def code_sequence(frames, point, *, margin: float, lam: float, weights: dict[str, np.ndarray] | None):
    """Per frame: (bytes, decoded float tensors by name)."""
    from splitinfer.codec import TemporalEncoder

    encoder = TemporalEncoder(intra_period=point.intra_period, hysteresis=margin, rdo_lambda=lam,
                              plane_weights=weights)
    out = []
    for _, tensors, _, _ in frames:
        quantizers = {name: point.quantizer_for(name) for name in tensors}
        coded = encoder.code(tensors, quantizers)
        encoder.commit(coded)
        out.append((coded.nbytes, {n: ref.quantizer.dequantize(ref.levels) for n, ref in coded.references.items()}))
    return out


def measure(args) -> list[dict]:
    model, ladder, split = shipped_model_and_ladder()
    weights = sensitivity(model, ladder.cut, args.calibration_images)
    for name, w in weights.items():
        print(f"sensitivity {name}: min {w.min():.2f} median {np.median(w):.2f} max {w.max():.2f}", flush=True)

    def variant(margin: float | None, lam: float, weighted: bool):
        return lambda frames, point: code_sequence(frames, point, margin=point.hysteresis if margin is None else margin,
                                                   lam=lam, weights=weights if weighted else None)

    variants = [("ladder", variant(None, 0.0, False))] + [(f"margin {m:g}", variant(m, 0.0, False))
                                                          for m in args.margins]
    variants += [(f"rdo {lam:g}", variant(None, lam, False)) for lam in args.lambdas]
    variants += [(f"rdo {lam:g} w", variant(None, lam, True)) for lam in args.weighted_lambdas]
    return sweep(args, model, ladder, split, variants)


def report(rows: list[dict], selection: tuple[str, ...], baseline: str = "ladder") -> str:
    lines = ["| video | set | point | variant | kbit/s | changes | ladder at equal rate | difference ± SE |",
             "|---|---|---|---|---|---|---|---|"]
    totals: dict[tuple[str, str], list[np.ndarray]] = {}
    for row in rows:
        equal = at_rate(rows, row["video"], baseline, row["kbps"]) if row["variant"] != baseline else None
        at, diff = ("", "") if row["variant"] == baseline else ("outside", "")
        if equal is not None:
            d = np.array(row["changes"], float) - equal
            at, diff = f"{equal.sum():.0f}", f"{d.sum():+.0f} ± {block_se(d, JACKKNIFE_BLOCK):.0f}"
            totals.setdefault((row["video"], row["variant"]), []).append(d)
        where = "selection" if row["video"] in selection else "report"
        lines.append(f"| {row['video']} | {where} | #{row['point']} | {row['variant']} | {row['kbps']:.1f} | "
                     f"{sum(row['changes'])} | {at} | {diff} |")
    lines += ["", "Summed over the points inside the ladder's curve (equal rate):", "",
              "| video | variant | points | difference ± SE | per point |", "|---|---|---|---|---|"]
    for (video, variant), ds in totals.items():
        d = np.sum(ds, axis=0)
        lines.append(f"| {video} | {variant} | {len(ds)} | {d.sum():+.0f} ± {block_se(d, JACKKNIFE_BLOCK):.0f} | "
                     f"{d.sum() / len(ds):+.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = sweep_arguments(__doc__, points=(0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16))
    parser.add_argument("--margins", type=float, nargs="*", default=[0.0, 0.25, 0.5])
    parser.add_argument("--lambdas", type=float, nargs="*", default=[0.01, 0.02, 0.05, 0.1, 0.2])
    parser.add_argument("--weighted-lambdas", type=float, nargs="*", default=[0.02, 0.05, 0.1])
    parser.add_argument("--calibration-images", type=int, default=16)
    args = parser.parse_args()
    rows = json.loads(args.out.read_text()) if args.report else measure(args)
    print(report(rows, tuple(args.selection)))


if __name__ == "__main__":
    main()
