"""Ideal-cost prototype for intra coding at high rates: MED/LOCO-I prediction, per-plane pivots, escapes.

    python bench/prototypes/intra_prototype.py                  # design + held-out tables (~2 min on one core)
    python bench/prototypes/intra_prototype.py --levels 8 16    # fewer rates

Tensors, one image = one coded tensor (C, H, W), as the edge codes them:
  design    Yolo-Fastest-1.1-XL cuts 34, 60, 80 on the first 8 coco-mini/calib2017 images, and
            EfficientNet-Lite0 blocks.2 / blocks.3 on 8 imagenet-sample images (files 0, 5, .., 35)
  held out  the same cuts on the first 8 coco-mini/val2017 images and imagenet-sample files 200, 205, .., 235
(computed once and cached under --cache, never in the repository). Each is quantized by a uniform
quantizer on [0.1th, 99.9th percentile] of its own set with N levels (--levels), and by the shipped
profile where one exists (yolo cut 80: dnn/profiles/yolo-fastest-1.1-xl.json, 9 ECSQ levels;
EfficientNet-Lite0 blocks.3: dnn/profiles/efficientnet-lite0.json, 6 uniform levels).

Costs are adaptive ideal costs (sum of -log2 p over every bin, with the probability model of the real
coder: two-rate 15-bit estimates, reset per tensor), so they predict real bytes: the "check" column
compares the prototype's replica of SIGNED_NEIGHBOUR_CONTEXTS with the real payload. Variants:
  base    the default coder's real payload bytes (default_coder: SIGNED_NEIGHBOUR_CONTEXTS here)
  pp      the signed binarization around a per-plane most probable level (1 byte per plane of side info)
  med     LOCO-I: the level predicted as median(left, above, left + above - above-left) from decoded
          neighbours; the residual coded as [e != 0], sign, |e| - 1 in truncated unary; contexts from the
          local gradient |left - aboveleft| + |above - aboveleft| (5 classes) and cmp(prediction, m)
  med+pp  med with m per plane
  esc     med with the magnitude's unary cut at 4 bins and an Exp-Golomb escape (fewer bins at N >= 32)
  ch      the signed coder with one context set per channel (plane)
  smed    the signed binarization around m, contexts from the MED prediction instead of left/above
  med2    med symmetrised around m (towards / away from m instead of up / down), 4 x 5 classes
  best    per tensor the cheaper of base and med (one more flag; the encoder codes twice)
  best4   per tensor the cheapest of base, med, smed and med2 (+2 bits; the encoder codes four times)
"bins/el" is the number of binary decisions per element, what bounds the coder's speed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from numba import njit
from splitinfer.codec import Coder, Quantizer, default_coder, encode_indices
from splitinfer.codec import _kernels as K
from splitinfer.codec.entropy import _cost_table
from splitinfer.codec.profile import CodecProfile
from splitinfer.sample_data import shared_data_dir

REPO = Path(__file__).resolve().parents[2]
DATA = shared_data_dir()
YOLO_CUTS = ("34", "60", "80")
EFF_CUTS = ("blocks.2", "blocks.3")
HEVC_WINS = ("yolo-34", "effnet-blocks.2")  # where HEVC intra beat this codec above ~6 kB/frame (issue #11)


def collect(cache: Path) -> dict[str, np.ndarray]:
    """'{set}/{model}-{cut}' -> (images, C, H, W) float32 head outputs, computed once into `cache`."""
    path = cache / "intra_heads.npz"
    if path.exists():
        return dict(np.load(path))
    import cv2
    import torch
    from splitinfer.dnn import load_model

    torch.set_num_threads(1)
    out: dict[str, np.ndarray] = {}

    def run(model, cut: str, files: list[Path], key: str) -> None:
        split = model.split(cut)
        (name,) = [s.name for s in split.tensors]
        out[key] = np.stack([split.head(model.preprocess(cv2.imread(str(f)))[0])[name].numpy()[0] for f in files])

    yolo = load_model("yolo-fastest-1.1-xl", weights=DATA / "models" / "yolo-fastest-1.1")
    for subset, tag in (("calib2017", "design"), ("val2017", "heldout")):
        files = sorted((DATA / "coco-mini" / subset).glob("*.jpg"))[:8]
        for cut in YOLO_CUTS:
            run(yolo, cut, files, f"{tag}/yolo-{cut}")
    eff = load_model("efficientnet-lite0")
    images = sorted((DATA / "imagenet-sample").glob("*.JPEG"))
    for tag, files in (("design", images[0:40:5]), ("heldout", images[200:240:5])):
        for cut in EFF_CUTS:
            run(eff, cut, files, f"{tag}/effnet-{cut}")
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


@njit(cache=True, inline="always")
def _cost(bit, probs, ctx, table):
    """The real coder's ideal cost of one bin, and its adaptation (same arithmetic as _kernels)."""
    pa = probs[2 * ctx]
    pb = probs[2 * ctx + 1]
    p = (pa + pb) >> 1
    c = table[p] if bit == 0 else table[K.PROB_ONE - p]
    mask = -np.int64(bit)
    probs[2 * ctx] = pa + (((K.FAST_HIGH - ((K.FAST_HIGH - K.FAST_LOW) & mask)) - pa) >> K.FAST_RATE)
    probs[2 * ctx + 1] = pb + (((K.SLOW_HIGH - ((K.SLOW_HIGH - K.SLOW_LOW) & mask)) - pb) >> K.SLOW_RATE)
    return c


@njit(cache=True, inline="always")
def _cmp3(v, p):
    return (v >= p) + (v > p)


@njit(cache=True)
def signed_cost(levels, pivots, n, table, sets=1):
    """SIGNED_NEIGHBOUR_CONTEXTS' ideal cost with pivot m = pivots[plane], `sets` context sets by plane % sets."""
    planes, h, w = levels.shape
    per_set = 12 + 6 * (n - 1)
    full = np.full(2 * per_set * sets, K.PROB_ONE // 2, np.int64)
    cost = 0.0
    bins = 0
    for p in range(planes):
        off0 = 2 * per_set * (p % sets)
        probs = full[off0:off0 + 2 * per_set]
        m = np.int64(pivots[p])
        up_room = n - 1 - m
        both = m > 0 and up_room > 0
        for y in range(h):
            left = m
            for x in range(w):
                k = np.int64(levels[p, y, x])
                above = np.int64(levels[p, y - 1, x]) if y > 0 else m
                off = 1 if k != m else 0
                cost += _cost(off, probs, (left != m) + (above != m), table)
                bins += 1
                if off == 0:
                    left = k
                    continue
                up = 1 if k > m else 0
                if both:
                    cost += _cost(up, probs, 3 + 3 * _cmp3(left, m) + _cmp3(above, m), table)
                    bins += 1
                mag = k - m - 1 if up == 1 else m - k - 1
                span = up_room - 1 if up == 1 else m - 1
                dl = abs(left - m)
                da = abs(above - m)
                for j in range(span):
                    bit = 1 if mag > j else 0
                    cost += _cost(bit, probs, 12 + 3 * (up * (n - 1) + j) + (dl > j + 1) + (da > j + 1), table)
                    bins += 1
                    if bit == 0:
                        break
                left = k
    return cost, bins


@njit(cache=True, inline="always")
def _grad_class(d):
    if d == 0:
        return 0
    if d == 1:
        return 1
    if d <= 3:
        return 2
    if d <= 7:
        return 3
    return 4


@njit(cache=True)
def med_cost(levels, pivots, n, table, unary_cap, mag_cap):
    """LOCO-I style: MED prediction, residual [e != 0], sign, |e| - 1 (unary up to unary_cap, then EG0); (bits, bins)."""
    planes, h, w = levels.shape
    classes = 5 * 3
    probs = np.full(2 * (classes * (2 + 2 * mag_cap) + 64), K.PROB_ONE // 2, np.int64)
    esc_base = classes * (2 + 2 * mag_cap)
    cost = 0.0
    bins = 0
    for p in range(planes):
        m = np.int64(pivots[p])
        for y in range(h):
            for x in range(w):
                k = np.int64(levels[p, y, x])
                if y == 0 and x == 0:
                    a = m
                    b = m
                    c = m
                elif y == 0:
                    a = np.int64(levels[p, y, x - 1])
                    b = a
                    c = a
                elif x == 0:
                    b = np.int64(levels[p, y - 1, x])
                    a = b
                    c = b
                else:
                    a = np.int64(levels[p, y, x - 1])
                    b = np.int64(levels[p, y - 1, x])
                    c = np.int64(levels[p, y - 1, x - 1])
                if c >= max(a, b):
                    pred = min(a, b)
                elif c <= min(a, b):
                    pred = max(a, b)
                else:
                    pred = a + b - c
                cls = _grad_class(abs(a - c) + abs(b - c)) * 3 + _cmp3(pred, m)
                e = k - pred
                nz = 1 if e != 0 else 0
                cost += _cost(nz, probs, cls, table)
                bins += 1
                if nz == 0:
                    continue
                up = 1 if e > 0 else 0
                if 0 < pred < n - 1:
                    cost += _cost(up, probs, classes + cls, table)
                    bins += 1
                span = n - 2 - pred if up == 1 else pred - 1
                mag = abs(e) - 1
                cap = min(span, unary_cap)
                for j in range(cap):
                    bit = 1 if mag > j else 0
                    ctx = 2 * classes + (2 * min(j, mag_cap - 1) + up) * classes + cls
                    cost += _cost(bit, probs, ctx, table)
                    bins += 1
                    if bit == 0:
                        break
                if span > unary_cap and mag >= unary_cap:
                    r = mag - unary_cap  # Exp-Golomb order 0: prefix in adaptive bins, suffix at 1 bit each
                    nbits = 0
                    while (r + 1) >> (nbits + 1):
                        nbits += 1
                    for j in range(nbits):
                        cost += _cost(1, probs, esc_base + min(j, 15), table)
                    if (1 << (nbits + 1)) - 1 <= span - unary_cap:
                        cost += _cost(0, probs, esc_base + min(nbits, 15), table)
                        bins += 1
                    cost += nbits
                    bins += 2 * nbits
    return cost, bins


@njit(cache=True)
def smed_cost(levels, pivots, n, table):
    """The signed binarization around m with contexts from the MED prediction p: (bits, bins).

    off bin: (left != m) + (above != m) + 3 cmp(|p - m|, 1); up bin: 3 cmp(p, m) + cmp(left + above, 2m);
    magnitude bin j: side, j and cmp(|p - m| on this side, j + 1), 3 classes.
    """
    planes, h, w = levels.shape
    probs = np.full(2 * (18 + 6 * (n - 1)), K.PROB_ONE // 2, np.int64)
    cost = 0.0
    bins = 0
    for p in range(planes):
        m = np.int64(pivots[p])
        up_room = n - 1 - m
        both = m > 0 and up_room > 0
        for y in range(h):
            for x in range(w):
                k = np.int64(levels[p, y, x])
                a = np.int64(levels[p, y, x - 1]) if x > 0 else m
                b = np.int64(levels[p, y - 1, x]) if y > 0 else m
                c = np.int64(levels[p, y - 1, x - 1]) if x > 0 and y > 0 else m
                if c >= max(a, b):
                    pred = min(a, b)
                elif c <= min(a, b):
                    pred = max(a, b)
                else:
                    pred = a + b - c
                dp = abs(pred - m)
                off = 1 if k != m else 0
                cost += _cost(off, probs, (a != m) + (b != m) + 3 * _cmp3(dp, 1), table)
                bins += 1
                if off == 0:
                    continue
                up = 1 if k > m else 0
                if both:
                    cost += _cost(up, probs, 9 + 3 * _cmp3(pred, m) + _cmp3(a + b, 2 * m), table)
                    bins += 1
                mag = k - m - 1 if up == 1 else m - k - 1
                span = up_room - 1 if up == 1 else m - 1
                same = dp if (pred > m) == (up == 1) else 0
                for j in range(span):
                    bit = 1 if mag > j else 0
                    cost += _cost(bit, probs, 18 + 3 * (up * (n - 1) + j) + _cmp3(same, j + 2), table)
                    bins += 1
                    if bit == 0:
                        break
    return cost, bins


@njit(cache=True)
def med2_cost(levels, pivots, n, table):
    """MED residual, symmetrised around m: [e != 0], [e points away from m], |e| - 1 in unary; (bits, bins).

    Contexts: gradient class g (5) x min(|p - m|, 3) (4) for the first two bins; the magnitude's bin j:
    min(j, 3), away or towards m, g.
    """
    planes, h, w = levels.shape
    probs = np.full(2 * (40 + 40), K.PROB_ONE // 2, np.int64)
    cost = 0.0
    bins = 0
    for p in range(planes):
        m = np.int64(pivots[p])
        for y in range(h):
            for x in range(w):
                k = np.int64(levels[p, y, x])
                if y == 0 and x == 0:
                    a = m
                    b = m
                    c = m
                elif y == 0:
                    a = np.int64(levels[p, y, x - 1])
                    b = a
                    c = a
                elif x == 0:
                    b = np.int64(levels[p, y - 1, x])
                    a = b
                    c = b
                else:
                    a = np.int64(levels[p, y, x - 1])
                    b = np.int64(levels[p, y - 1, x])
                    c = np.int64(levels[p, y - 1, x - 1])
                if c >= max(a, b):
                    pred = min(a, b)
                elif c <= min(a, b):
                    pred = max(a, b)
                else:
                    pred = a + b - c
                g = _grad_class(abs(a - c) + abs(b - c))
                cls = g * 4 + min(abs(pred - m), 3)
                e = k - pred
                nz = 1 if e != 0 else 0
                cost += _cost(nz, probs, cls, table)
                bins += 1
                if nz == 0:
                    continue
                s = 1 if pred >= m else -1
                away = 1 if e * s > 0 else 0
                up = 1 if e > 0 else 0
                if 0 < pred < n - 1:
                    cost += _cost(away, probs, 20 + cls, table)
                    bins += 1
                span = n - 2 - pred if up == 1 else pred - 1
                mag = abs(e) - 1
                for j in range(span):
                    bit = 1 if mag > j else 0
                    cost += _cost(bit, probs, 40 + (2 * min(j, 3) + away) * 5 + g, table)
                    bins += 1
                    if bit == 0:
                        break
    return cost, bins


def plane_modes(levels: np.ndarray, n: int) -> np.ndarray:
    flat = levels.reshape(levels.shape[0], -1)
    return np.array([np.bincount(row, minlength=n).argmax() for row in flat], np.uint8)


def quantizers(design: np.ndarray, levels: list[int], key: str) -> list[tuple[str, Quantizer]]:
    lo, hi = np.percentile(design, [0.1, 99.9])
    out = [(f"uniform N={n}", Quantizer.uniform(float(lo), float(hi), n)) for n in levels]
    shipped = {"yolo-80": ("yolo-fastest-1.1-xl.json", "profile (9 ECSQ)"),
               "effnet-blocks.3": ("efficientnet-lite0.json", "profile (6 uniform)")}
    for tensor, (name, label) in shipped.items():
        if key.endswith("/" + tensor):
            out.insert(0, (label, CodecProfile.load(REPO / "dnn" / "profiles" / name).quantizer))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/splitinfer-intra"))
    args = parser.parse_args()
    heads = collect(args.cache)
    table = _cost_table()
    variants = ("pp", "ch", "med", "med+pp", "esc", "smed", "med2", "best", "best4")
    print("| set | tensor | quantizer | bytes/frame | base bits/el | check % | base bins/el | "
          + " | ".join(f"{v} %" for v in variants) + " | med bins/el | esc bins/el |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(variants) + "---|---|")
    summary: dict[tuple[str, str], list[list[float]]] = {}
    for key in sorted(heads, key=lambda k: (k.split("/")[0] != "design", k)):
        subset, tensor = key.split("/")
        design = heads[f"design/{tensor}"]
        for qname, q in quantizers(design, args.levels, key):
            n = q.levels
            base = check = base_bins = 0.0
            costs = dict.fromkeys(variants, 0.0)
            bins = {"med": 0, "esc": 0}
            for frame in heads[key]:
                lv = q.quantize(frame)
                coder = default_coder(q)
                base += 8 * len(encode_indices(lv, n, coder))
                planes = lv.reshape(-1, *lv.shape[-2:])
                m = int(np.bincount(planes.ravel(), minlength=n).argmax())
                glob = np.full(planes.shape[0], m, np.uint8)
                pp = plane_modes(planes, n)
                c, bb = signed_cost(planes, glob, n, table)
                check += c
                base_bins += bb
                if coder is not Coder.SIGNED_NEIGHBOUR_CONTEXTS:
                    raise SystemExit(f"{key}: {qname} is not signed; the replica models SIGNED_NEIGHBOUR_CONTEXTS only")
                side = 8 * planes.shape[0]
                costs["pp"] += signed_cost(planes, pp, n, table)[0] + side
                c, bb = med_cost(planes, glob, n, table, 64, 4)
                costs["med"] += c
                bins["med"] += bb
                costs["med+pp"] += med_cost(planes, pp, n, table, 64, 4)[0] + side
                c, bb = med_cost(planes, glob, n, table, 4, 4)
                costs["esc"] += c
                costs["smed"] += smed_cost(planes, glob, n, table)[0]
                costs["ch"] += signed_cost(planes, glob, n, table, planes.shape[0])[0]
                costs["med2"] += med2_cost(planes, glob, n, table)[0]
                base_cost = signed_cost(planes, glob, n, table)[0]
                med_only = med_cost(planes, glob, n, table, 64, 4)[0]
                costs["best"] += min(base_cost, med_only)
                costs["best4"] += min(base_cost, med_only, smed_cost(planes, glob, n, table)[0],
                                      med2_cost(planes, glob, n, table)[0]) + 2
                bins["esc"] += bb
            frames = heads[key].shape[0]
            el = heads[key][0].size * frames
            cells = [f"{100 * (costs[v] - base) / base:+.1f}" for v in variants]
            print(f"| {subset} | {tensor} {heads[key].shape[1:]} | {qname} | {base / 8 / frames:.0f} | "
                  f"{base / el:.3f} | {100 * (check - base) / base:+.2f} | {base_bins / el:.2f} | "
                  + " | ".join(cells) + f" | {bins['med'] / el:.2f} | {bins['esc'] / el:.2f} |", flush=True)
            rate = "high" if base / 8 / frames >= 6000 else "low"
            summary.setdefault((subset, rate), []).append([base] + [costs[v] for v in variants])
            if rate == "high" and tensor in HEVC_WINS:
                summary.setdefault((subset, "hevc"), []).append([base] + [costs[v] for v in variants])
    print("\n| set | rate range | tensors x quantizers | " + " | ".join(f"{v} % (total)" for v in variants) + " |")
    print("|---|---|---|" + "---|" * len(variants))
    for (subset, rate), rows in sorted(summary.items()):
        totals = np.sum(rows, axis=0)
        cells = [f"{100 * (t - totals[0]) / totals[0]:+.1f}" for t in totals[1:]]
        label = {"high": ">= 6 kB/frame", "low": "< 6 kB/frame",
                 "hevc": ">= 6 kB/frame, yolo-34 + effnet-blocks.2 only"}[rate]
        print(f"| {subset} | {label} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
