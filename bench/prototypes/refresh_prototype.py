"""Prototype for fewer, cheaper refreshes (issue 19 item 1): long intra periods and gradual intra refresh.

    python bench/prototypes/refresh_prototype.py --out /tmp/refresh.json --videos shared tree     # selection
    python bench/prototypes/refresh_prototype.py --out /tmp/refresh.json --report                  # tables

Real Yolo-Fastest-1.1-XL head tensors at the ladder's cut (the first --frames frames of each video at its native
frame rate), coded at the shipped ladder's points (quantizer and hysteresis of each point) in three ways:
- `period P`: whole intra frames every P frames, inter frames (TEMPORAL_CONTEXTS version 2, hysteresis) between:
  the shipped TemporalEncoder, real bytes. P = 30 is today's video path; 250 is x264's default key interval
  (with 150 frames: one intra frame, the first).
- `rolling R`: gradual intra refresh. The first frame is intra; afterwards, in frame t the channels c with
  c mod R == t mod R are quantized afresh (no hysteresis) and coded with the intra coder, the others as inter
  frames against the reference. Every channel is refreshed once per R frames, as with a whole intra frame every
  R frames. Bytes: the real intra payload of the refreshed channels (as one tensor) plus the real inter payload
  of the rest: an upper bound of a real implementation, which would pay one header instead of two and keep its
  probability models across the two parts (the ideal-cost first step of issue 19; no bitstream change).
Detection changes are lost + added of the tail's detections on the decoded levels against the unsplit model
(services/fidelity.py). Equal rate: the changes of `period 30` at each point are interpolated (linear in log
rate) to the rate of the variant's run at the same point, and the paired difference gets a standard error by block
jackknife over 30-frame blocks (bench/rate_control.py's block_se). Frame-size spread: the standard deviation and
the largest frame, in bytes (a frame's bytes over a thin link are its latency).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rate_control import DATA, block_se, heads_and_references, native_fps, video_label, video_path  # noqa: E402

JACKKNIFE_BLOCK = 30


def code_sequence(frames, point, *, period: int | None = None, rolling: int | None = None):
    """Per frame: (bytes, decoded float tensors by name). Exactly one of `period` and `rolling` is set."""
    from splitinfer.codec import Coder, TemporalEncoder, default_coder, encode_levels, quantize_with_reference
    from splitinfer.codec.entropy import INTER_VERSION

    out = []
    if period is not None:
        encoder = TemporalEncoder(intra_period=period, hysteresis=point.hysteresis)
        for _, tensors, _, _ in frames:
            quantizers = {name: point.quantizer_for(name) for name in tensors}
            coded = encoder.code({n: t[0] for n, t in tensors.items()}, quantizers)
            encoder.commit(coded)
            out.append((coded.nbytes, {n: ref.quantizer.dequantize(ref.levels)[None]
                                       for n, ref in coded.references.items()}))
        return out
    previous: dict[str, np.ndarray] = {}
    for t, (_, tensors, _, _) in enumerate(frames):
        nbytes, decoded = 0, {}
        for name, tensor in tensors.items():
            quantizer, x = point.quantizer_for(name), tensor[0]
            if name not in previous:
                levels = quantizer.quantize(x)
                nbytes += encode_levels(levels, quantizer, coder=default_coder(quantizer)).nbytes
            else:
                fresh = np.arange(x.shape[0]) % rolling == t % rolling
                levels = quantize_with_reference(x, quantizer, previous[name], point.hysteresis)
                levels[fresh] = quantizer.quantize(x[fresh])
                if fresh.any():
                    nbytes += encode_levels(levels[fresh], quantizer, coder=default_coder(quantizer)).nbytes
                rest = ~fresh
                nbytes += encode_levels(levels[rest], quantizer, coder=Coder.TEMPORAL_CONTEXTS,
                                        reference=previous[name][rest], coder_version=INTER_VERSION).nbytes
            previous[name] = levels
            decoded[name] = quantizer.dequantize(levels)[None]
        out.append((nbytes, decoded))
    return out


def changes(model, split, frames, coded) -> list[int]:
    import torch

    from splitinfer.services.fidelity import compare

    found = []
    with torch.no_grad():
        for (_, _, info, reference), (_, decoded) in zip(frames, coded):
            outputs = split.tail({n: torch.from_numpy(v) for n, v in decoded.items()})
            fidelity = compare(reference, model.postprocess(outputs, info))
            found.append(fidelity.lost + fidelity.added)
    return found


def shipped_model_and_ladder():
    """(model, ladder, split at the ladder's cut): Yolo-Fastest-1.1-XL and its shipped codec ladder, one thread."""
    import torch

    from splitinfer.codec.ladder import CodecLadder
    from splitinfer.dnn import load_model
    from splitinfer.services.profiles import packaged_profile

    torch.set_num_threads(1)
    model = load_model("yolo-fastest-1.1-xl", weights=DATA / "models" / "yolo-fastest-1.1")
    ladder = CodecLadder.load(packaged_profile(model.name, "ladder"))
    return model, ladder, model.split(ladder.cut)


def sweep(args, model, ladder, split, variants: list[tuple[str, Callable]]) -> list[dict]:
    """Per video of args.videos, ladder point of args.points and (label, code(frames, point)) variant: a row with
    the frame sizes, detection changes and rate, logged and saved to args.out as it goes."""
    rows: list[dict] = []
    for name in args.videos:
        path, video = video_path(name), video_label(name)
        fps = native_fps(path)
        frames = heads_and_references(model, ladder.cut, path, math.inf, None, args.frames)
        print(f"{video}: {len(frames)} frames at {fps:g} fps", flush=True)
        for index in args.points:
            point = ladder.points[index]
            for label, code in variants:
                coded = code(frames, point)
                sizes = [b for b, _ in coded]
                row = {"video": video, "fps": fps, "point": index, "variant": label, "sizes": sizes,
                       "changes": changes(model, split, frames, coded)}
                row["kbps"] = 8 * sum(sizes) * fps / len(sizes) / 1000
                rows.append(row)
                print(f"  {video} #{index} {label:12s} {row['kbps']:7.1f} kbit/s mean {np.mean(sizes):6.0f} B "
                      f"sd {np.std(sizes):6.0f} max {max(sizes):6d} changes {sum(row['changes'])}", flush=True)
                args.out.write_text(json.dumps(rows))
    return rows


def sweep_arguments(doc: str | None, points: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 8)) -> argparse.ArgumentParser:
    """The options every `sweep` prototype takes: output, --report, videos, selection set, frames, ladder points."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--videos", nargs="+", default=["shared", "tree"])
    parser.add_argument("--selection", nargs="+", default=["shared", "tree"])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--points", type=int, nargs="+", default=list(points), help="ladder points")
    return parser


def measure(args) -> list[dict]:
    model, ladder, split = shipped_model_and_ladder()
    variants = [(f"period {p}", functools.partial(code_sequence, period=p)) for p in args.periods]
    variants += [(f"rolling {r}", functools.partial(code_sequence, rolling=r)) for r in args.rolling]
    return sweep(args, model, ladder, split, variants)


def at_rate(rows: list[dict], video: str, variant: str, kbps: float) -> np.ndarray | None:
    """Per-frame changes of `variant`'s points interpolated (linear in log rate) to `kbps`; None outside."""
    curve = sorted((r for r in rows if r["video"] == video and r["variant"] == variant), key=lambda r: r["kbps"])
    for low, high in zip(curve, curve[1:]):
        if low["kbps"] <= kbps <= high["kbps"] and high["kbps"] > low["kbps"]:
            w = (math.log(kbps) - math.log(low["kbps"])) / (math.log(high["kbps"]) - math.log(low["kbps"]))
            return (1 - w) * np.array(low["changes"], float) + w * np.array(high["changes"], float)
    return None


def report(rows: list[dict], selection: tuple[str, ...], baseline: str = "period 30") -> str:
    lines = ["| video | set | point | variant | kbit/s | bytes vs period 30 | mean B/frame | sd B | largest B | changes | "
             "period 30 at equal rate | difference ± SE |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        base = next(r for r in rows if r["video"] == row["video"] and r["point"] == row["point"]
                    and r["variant"] == baseline)
        equal = at_rate(rows, row["video"], baseline, row["kbps"]) if row is not base else None
        if row is base:
            at, diff = "", ""
        elif equal is None:
            at, diff = "outside", ""
        else:
            d = np.array(row["changes"], float) - equal
            at, diff = f"{equal.sum():.0f}", f"{d.sum():+.0f} ± {block_se(d, JACKKNIFE_BLOCK):.0f}"
        sizes = row["sizes"]
        ratio = f"{100 * (sum(sizes) / sum(base['sizes']) - 1):+.0f} %" if row is not base else ""
        where = "selection" if row["video"] in selection else "report"
        lines.append(f"| {row['video']} | {where} | #{row['point']} | {row['variant']} | {row['kbps']:.1f} | {ratio} | "
                     f"{statistics.mean(sizes):.0f} | {statistics.pstdev(sizes):.0f} | {max(sizes)} | "
                     f"{sum(row['changes'])} | {at} | {diff} |")
    return "\n".join(lines)


def main() -> None:
    parser = sweep_arguments(__doc__)
    parser.add_argument("--periods", type=int, nargs="+", default=[30, 250])
    parser.add_argument("--rolling", type=int, nargs="+", default=[30])
    args = parser.parse_args()
    rows = json.loads(args.out.read_text()) if args.report else measure(args)
    print(report(rows, tuple(args.selection)))


if __name__ == "__main__":
    main()
