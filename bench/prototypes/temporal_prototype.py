"""Ideal-cost prototype for richer temporal (inter-frame) coding: block skip and change-from-reference coding.

    python bench/prototypes/temporal_prototype.py                 # all settings, all four videos (~2 min on one core)
    python bench/prototypes/temporal_prototype.py --frames 40     # shorter

Real Yolo-Fastest-1.1-XL head tensors (cuts 60 and 80, 48x20x20) of four videos sampled at about 10 fps
(cached as .npy under --cache, never in the repository), quantized as TemporalEncoder does (intra every
30 frames, inter frames with hysteresis against the previous frame's levels). Every inter frame is coded
by each variant; the cost of a variant is its adaptive ideal cost (sum of -log2 p over its bins, with the
very probability model the real coder uses: two-rate 15-bit estimates, reset per tensor), so it predicts
real bytes (the table's first column checks that against the real TEMPORAL_CONTEXTS payloads).

Variants (all lossless on levels):
  v1      TEMPORAL_CONTEXTS: truncated unary, bin b's context 3b + cmp(ref, b)
  chg     the change from the reference: bin [k != ref] (context: left/above changed in this frame, and
          the reference's neighbourhood activity), then the direction (context: the neighbours' directions),
          then |k - ref| - 1 in truncated unary
  plane   a skip flag per plane (context: the previous plane's flag), the rest as v1 / chg
  tileT   a skip flag per T x T tile of a plane (context: left + above tile flags), the rest as v1 / chg
The videos person and vtest chose the design; megamind and tree are held out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from numba import njit

from splitinfer.codec import Coder, Quantizer, encode_indices, quantize_with_reference
from splitinfer.codec import _kernels as K
from splitinfer.codec.profile import CodecProfile
from splitinfer.sample_data import shared_data_dir

REPO = Path(__file__).resolve().parents[2]
DATA = shared_data_dir()
OPENCV = Path("/usr/share/doc/opencv-doc/examples/data")
VIDEOS = {"person": DATA / "video" / "one-by-one-person-detection.mp4", "vtest": OPENCV / "vtest.avi",
          "megamind": OPENCV / "Megamind.avi", "tree": OPENCV / "tree.avi"}
DESIGN = ("person", "vtest")
CUTS = ("60", "80")


def heads(cache: Path, frames: int) -> dict[tuple[str, str], np.ndarray]:
    """(video, cut) -> (frames, 48, 20, 20) float32 head tensors, computed once and cached under `cache`."""
    out = {}
    missing = [v for v in VIDEOS if not all((cache / f"{v}-{c}.npy").exists() for c in CUTS)]
    if missing:
        import cv2
        import torch
        from splitinfer.dnn import load_model

        torch.set_num_threads(1)
        model = load_model("yolo-fastest-1.1-xl", weights=DATA / "models" / "yolo-fastest-1.1")
        splits = {c: model.split(c) for c in CUTS}
        cache.mkdir(parents=True, exist_ok=True)
        for name in missing:
            capture = cv2.VideoCapture(str(VIDEOS[name]))
            step = max(1, round((capture.get(cv2.CAP_PROP_FPS) or 25) / 10))
            got: dict[str, list] = {c: [] for c in CUTS}
            index = 0
            while len(got[CUTS[0]]) < 100:
                ok, image = capture.read()
                if not ok:
                    break
                if index % step == 0:
                    x, _ = model.preprocess(image)
                    with torch.no_grad():
                        for c, split in splits.items():
                            got[c].append(next(iter(split.head(x).values())).float().numpy())
                index += 1
            for c in CUTS:
                np.save(cache / f"{name}-{c}.npy", np.concatenate(got[c]))
    for name in VIDEOS:
        for c in CUTS:
            out[name, c] = np.load(cache / f"{name}-{c}.npy")[:frames]
    return out


# ------------------------------------------------------------------------------------ adaptive cost model


@njit(cache=True, inline="always")
def _bit(bit, probs, ctx, table):
    pa = probs[2 * ctx]
    pb = probs[2 * ctx + 1]
    p = (pa + pb) >> 1
    if bit:
        probs[2 * ctx] = pa + ((K.FAST_LOW - pa) >> K.FAST_RATE)
        probs[2 * ctx + 1] = pb + ((K.SLOW_LOW - pb) >> K.SLOW_RATE)
        return table[K.PROB_ONE - p]
    probs[2 * ctx] = pa + ((K.FAST_HIGH - pa) >> K.FAST_RATE)
    probs[2 * ctx + 1] = pb + ((K.SLOW_HIGH - pb) >> K.SLOW_RATE)
    return table[p]


@njit(cache=True)
def _cost(lv, rf, n, elem, skip, tile, act_ctx, table, m):
    """Ideal bits of one (P, H, W) level tensor against its reference.

    elem: 0 v1 truncated unary with cmp(ref, b) contexts, 1 change coding.
    skip: 0 none, 1 per plane, 2 per tile, 3 plane then tiles.  act_ctx: change-bin context uses ref activity.
    """
    planes, h, w = lv.shape
    probs = np.full(2 * 512, K.PROB_ONE // 2, np.int64)
    cost = 0.0
    SK = 0          # 0..1 plane flag, 2..4 tile flag
    EL = 8          # element contexts from here
    prev_plane = 0
    ty_n = (h + tile - 1) // tile
    tx_n = (w + tile - 1) // tile
    coded = np.ones((h, w), np.uint8)
    tflag = np.zeros((ty_n, tx_n), np.uint8)
    for p in range(planes):
        same = True
        for y in range(h):
            for x in range(w):
                if lv[p, y, x] != rf[p, y, x]:
                    same = False
        coded[:, :] = 1
        if skip == 1 or skip == 3:
            cost += _bit(1 if same else 0, probs, SK + prev_plane, table)
            prev_plane = 1 if same else 0
            if same:
                continue
        if skip >= 2:
            for ty in range(ty_n):
                for tx in range(tx_n):
                    s = 1
                    for y in range(ty * tile, min(h, ty * tile + tile)):
                        for x in range(tx * tile, min(w, tx * tile + tile)):
                            if lv[p, y, x] != rf[p, y, x]:
                                s = 0
                    left = tflag[ty, tx - 1] if tx > 0 else 1
                    above = tflag[ty - 1, tx] if ty > 0 else 1
                    cost += _bit(s, probs, 2 + left + above, table)
                    tflag[ty, tx] = s
                    if s:
                        for y in range(ty * tile, min(h, ty * tile + tile)):
                            for x in range(tx * tile, min(w, tx * tile + tile)):
                                coded[y, x] = 0
        for y in range(h):
            for x in range(w):
                if not coded[y, x]:
                    continue
                k = np.int64(lv[p, y, x])
                r = np.int64(rf[p, y, x])
                if elem == 0:
                    for b in range(n - 1):
                        bit = 1 if k > b else 0
                        cost += _bit(bit, probs, EL + 3 * b + (r >= b) + (r > b), table)
                        if bit == 0:
                            break
                    continue
                dl = np.int64(lv[p, y, x - 1]) - rf[p, y, x - 1] if x > 0 else 0
                da = np.int64(lv[p, y - 1, x]) - rf[p, y - 1, x] if y > 0 else 0
                ctx = (dl != 0) + (da != 0)
                if act_ctx == 2:
                    ctx += 3 * min(abs(r - m), 2)
                if act_ctx == 1:
                    act = 0
                    if x > 0:
                        act += rf[p, y, x - 1] != r
                    if x + 1 < w:
                        act += rf[p, y, x + 1] != r
                    if y > 0:
                        act += rf[p, y - 1, x] != r
                    if y + 1 < h:
                        act += rf[p, y + 1, x] != r
                    ctx += 3 * min(act, 2)
                changed = 1 if k != r else 0
                cost += _bit(changed, probs, EL + ctx, table)
                if not changed:
                    continue
                up = 1 if k > r else 0
                if 0 < r < n - 1:
                    s = dl + da
                    sctx = 0 if s < 0 else (1 if s == 0 else 2)
                    if act_ctx == 2:
                        sctx += 3 * ((r >= m) + (r > m))
                    cost += _bit(up, probs, EL + 20 + sctx, table)
                span = n - 2 - r if up else r - 1
                mag = abs(k - r) - 1
                big = (abs(dl) > 1) + (abs(da) > 1)
                for j in range(span):
                    bit = 1 if mag > j else 0
                    cost += _bit(bit, probs, EL + 40 + 3 * (2 * min(j, 3) + up) + big, table)
                    if bit == 0:
                        break
    return cost


# ------------------------------------------------------------------------------------ settings and main


def settings() -> list[tuple[str, str, Quantizer, float]]:
    """(label, cut, quantizer, hysteresis): the shipped profiles and lower-rate ones."""
    video = CodecProfile.load(REPO / "dnn" / "profiles" / "yolo-fastest-1.1-xl-video.json")
    image = CodecProfile.load(REPO / "dnn" / "profiles" / "yolo-fastest-1.1-xl.json")
    c60, c80 = video.quantizer.clip_max, image.quantizer.clip_max
    return [
        ("c60 profile U13 h0.1", "60", video.quantizer, 0.1),
        ("c60 U7 h0.1", "60", Quantizer.uniform(-c60, c60, 7), 0.1),
        ("c60 U5 h0.1", "60", Quantizer.uniform(-c60, c60, 5), 0.1),
        ("c60 U5 x1.5 h0.3", "60", Quantizer.uniform(-1.5 * c60, 1.5 * c60, 5), 0.3),
        ("c80 profile E9 h0.1", "80", image.quantizer, 0.1),
        ("c80 U5 h0.1", "80", Quantizer.uniform(-c80, c80, 5), 0.1),
    ]


# name -> (elem, skip, tile, contexts of the change bins: 0 neighbours, 1 + ref activity, 2 + ref level).
# "chg+lvl+plane" is what was built: TEMPORAL_CONTEXTS version 2 (docs/BITSTREAM.md 4.3).
VARIANTS = {
    "v1": (0, 0, 1, 0),
    "v1+plane": (0, 1, 1, 0),
    "v1+tile2": (0, 2, 2, 0),
    "v1+tile4": (0, 2, 4, 0),
    "v1+plane+tile4": (0, 3, 4, 0),
    "chg+act": (1, 0, 1, 1),
    "chg+lvl": (1, 0, 1, 2),
    "chg+lvl+plane": (1, 1, 1, 2),
    "chg+lvl+tile4": (1, 2, 4, 2),
    "chg+lvl+plane+tile4": (1, 3, 4, 2),
}


def sequence(tensors: np.ndarray, quantizer: Quantizer, margin: float, period: int = 30):
    """(levels, reference) of every inter frame, quantized as TemporalEncoder does."""
    previous = None
    out = []
    for t, frame in enumerate(tensors):
        if previous is None or t % period == 0:
            levels = quantizer.quantize(frame)
        else:
            levels = quantize_with_reference(frame, quantizer, previous, margin)
            out.append((levels, previous))
        previous = levels
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=80, help="frames per video (about 10 fps)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/splitinfer-temporal-heads"))
    args = parser.parse_args()
    table = np.empty(K.PROB_ONE + 1)
    table[1:] = -np.log2(np.arange(1, K.PROB_ONE + 1) / K.PROB_ONE)
    table[0] = table[1]
    data = heads(args.cache, args.frames)
    names = list(VARIANTS)
    print("Inter frames only; bytes/frame = ideal bits / 8 per inter frame (real = real v1 payload bytes).\n")
    print("| setting | video | inter frames | real v1 B | " + " | ".join(names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    summary: dict[tuple[str, str], dict[str, float]] = {}
    for label, cut, quantizer, margin in settings():
        for video in VIDEOS:
            pairs = sequence(data[video, cut], quantizer, margin)
            real = sum(len(encode_indices(lv, quantizer.levels, Coder.TEMPORAL_CONTEXTS, reference=rf))
                       for lv, rf in pairs)
            row = {}
            modes = [int(np.argmax(np.bincount(rf.ravel(), minlength=quantizer.levels))) for _, rf in pairs]
            for name, (elem, skip, tile, act) in VARIANTS.items():
                bits = sum(_cost(lv, rf, quantizer.levels, elem, skip, tile, act, table, m)
                           for (lv, rf), m in zip(pairs, modes))
                row[name] = bits / 8 / len(pairs)
            summary[label, video] = row
            cells = [f"{row['v1']:.0f}"] + [f"{row[n]:.0f} ({100 * (row[n] / row['v1'] - 1):+.0f} %)"
                                            for n in names[1:]]
            print(f"| {label} | {video} | {len(pairs)} | {real / len(pairs):.0f} | " + " | ".join(cells) + " |",
                  flush=True)
    print("\nSaving vs v1 ideal, mean over settings of the per-setting total (design videos / held-out videos):\n")
    print("| variant | design | held-out |")
    print("|---|---|---|")
    for name in names[1:]:
        cells = []
        for group in (DESIGN, tuple(v for v in VIDEOS if v not in DESIGN)):
            savings = [1 - sum(summary[label, v][name] for v in group) / sum(summary[label, v]["v1"] for v in group)
                       for label, *_ in settings()]
            cells.append(f"{100 * np.mean(savings):.1f} % (min {100 * min(savings):.1f} %)")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
