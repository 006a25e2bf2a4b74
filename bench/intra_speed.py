"""Entropy-coder throughput at 1-2 bits/element, one core, CPU time; optionally A/B against another _kernels.py.

    python bench/intra_speed.py                                   # the current kernels
    python bench/intra_speed.py --breakdown                       # where the encoder's time goes
    python bench/intra_speed.py --against /tmp/k/kernels_old.py  # side by side with a copy of other kernels

Tensors: ../shared/data/activations/yolo-fastest-1.1-xl.npz, one image at a time (what the edge codes),
uniform quantizer on [0.1th, 99.9th percentile] (signed layers) or [0, 99.9th] (leaky), N levels; the
default coder for each. Each round times every kernel once over all images (time.process_time), the
kernels interleaved round by round, so drifting load on a shared machine hits both sides alike; the
table gives the median over rounds of M elements/s, and for --against the per-round ratio new/old
(mean +- standard error). Rounds also interleave the tensors and levels (each round runs every row once, in a
rotated order). "best" is the fastest round: on a shared machine the round least disturbed by other jobs, the
closest figure to an idle core. Payloads of both sides are asserted byte-identical.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit
from splitinfer.codec import Coder, Quantizer, default_coder
from splitinfer.codec import _kernels as K
from splitinfer.codec.entropy import most_probable_level

ACTIVATIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "activations" / "yolo-fastest-1.1-xl.npz"
SIGNED = ("layer34", "layer80")


def load_kernels(path: Path):
    """Import a copy of _kernels.py under its own (importable, so numba can cache it) module name."""
    sys.path.insert(0, str(path.resolve().parent))
    return importlib.import_module(path.stem)


@njit(cache=True)
def _tu_parts(levels, planes, height, width, n_levels, adapt, code, exit_free, out):
    """NEIGHBOUR_CONTEXTS' encoder with parts switched off: adapt = update the probabilities, code = run the
    range coder (with a fixed 50 % probability when not adapting); exit_free (with neither) = every element
    computes all N - 1 contexts, no data-dependent loop exit; returns a checksum so nothing is elided."""
    probs = np.full(2 * (n_levels - 1) * 3, K.PROB_ONE // 2, np.int64)
    low = 0
    rng = K.MASK32
    cache = 0
    pending = 0
    pos = 0
    acc = 0
    last = n_levels - 1
    plane_size = height * width
    for p in range(planes):
        base = p * plane_size
        for y in range(height):
            row = base + y * width
            left = 0
            for x in range(width):
                i = row + x
                k = levels[i]
                above = levels[i - width] if y > 0 else 0
                for b in range(last):
                    bit = 1 if k > b else 0
                    ctx = 3 * b + (left > b) + (above > b)
                    if code:
                        if adapt:
                            low, rng, cache, pending, pos = K._encode_bin(bit, probs, ctx, low, rng, cache, pending,
                                                                          out, pos)
                        else:
                            bound = (rng >> K.PROB_BITS) * (K.PROB_ONE // 2)
                            mask = -np.int64(bit)
                            low += bound & mask
                            rng = bound + ((rng - bound - bound) & mask)
                            while rng < K.TOP:
                                rng <<= 8
                                low, cache, pending, pos = K._shift_low(low, cache, pending, out, pos)
                    elif adapt:
                        pa = probs[2 * ctx]
                        mask = -np.int64(bit)
                        probs[2 * ctx] = pa + (((K.FAST_HIGH - ((K.FAST_HIGH - K.FAST_LOW) & mask)) - pa) >> 4)
                        pb = probs[2 * ctx + 1]
                        probs[2 * ctx + 1] = pb + (((K.SLOW_HIGH - ((K.SLOW_HIGH - K.SLOW_LOW) & mask)) - pb) >> 7)
                    else:
                        acc += ctx
                    if bit == 0 and not (code or adapt or exit_free):
                        # the data-dependent exit costs a mispredicted branch on most non-zero levels
                        break
                    if bit == 0 and (code or adapt):
                        break
                left = k
    return acc + pos + probs[0]


def breakdown(data, layers: list[str], n: int, rounds: int) -> None:
    """Where NEIGHBOUR_CONTEXTS' encode time goes (on any layer's levels): binarization, adaptation, range coder."""
    parts = (("N - 1 contexts per element, no early exit", False, False, True),
             ("binarization + contexts only", False, False, False), ("+ probability adaptation", True, False, False),
             ("binarization + range coder, fixed p = 1/2", False, True, False),
             ("everything (the real encoder)", True, True, False))
    print("| tensor | N | " + " | ".join(f"{name} M el/s" for name, *_ in parts) + " |")
    print("|---|---|" + "---|" * len(parts))
    for layer in layers:
        x = data[layer]
        lo = float(np.percentile(x, 0.1)) if layer in SIGNED else 0.0
        q = Quantizer.uniform(lo, float(np.percentile(x, 99.9)), n)
        images = [np.ascontiguousarray(q.quantize(f)).reshape(-1) for f in x]
        c, h, w = x.shape[1:]
        out = np.empty(4 * images[0].size + 64, np.uint8)
        for _, adapt, code, exit_free in parts:  # compile (or load) every specialisation before timing
            _tu_parts(images[0], c, h, w, n, adapt, code, exit_free, out)
        rates: dict[str, list[float]] = {}
        for _ in range(rounds):
            for name, adapt, code, exit_free in parts:
                start = time.process_time()
                for lv in images:
                    _tu_parts(lv, c, h, w, n, adapt, code, exit_free, out)
                rates.setdefault(name, []).append(sum(i.size for i in images) / (time.process_time() - start) / 1e6)
        print(f"| {layer} {x.shape[1:]} | {n} | " + " | ".join(
            f"{statistics.median(rates[name]):.0f}" for name, *_ in parts) + " |", flush=True)


def bin_count(lv: np.ndarray, n: int, coder: Coder) -> int:
    """The number of binary decisions the coder's binarization makes of these levels."""
    k = lv.astype(np.int64)
    if coder is Coder.NEIGHBOUR_CONTEXTS:
        return int(np.minimum(k + 1, n - 1).sum())
    m = most_probable_level(lv, n)
    both = int(0 < m < n - 1)
    span = np.where(k > m, n - 2 - m, m - 1)
    return int((1 + (k != m) * (both + np.minimum(np.abs(k - m), span))).sum())


def coder_calls(kernels, lv: np.ndarray, n: int, coder: Coder):
    """(encode(), decode(payload)) closures calling the raw kernels as entropy.py does (no validation)."""
    planes = int(np.prod(lv.shape[:-2]))
    h, w = lv.shape[-2:]
    flat = np.ascontiguousarray(lv).reshape(-1)
    mode = most_probable_level(flat, n)

    if coder is Coder.SIGNED_NEIGHBOUR_CONTEXTS:
        def enc():
            out = np.empty(flat.size + 64, np.uint8)
            size, _ = kernels._encode_signed(flat, planes, h, w, n, mode, out, None)
            return out[:size].tobytes()

        def dec(payload):
            return kernels._decode_signed(np.frombuffer(payload, np.uint8)[1:], planes, h, w, n, mode, 1 << 40)[0]
    else:
        def enc():
            out = np.empty(flat.size + 64, np.uint8)
            size, _ = kernels._encode_tu(flat, planes, h, w, n, 1, None, out, None)
            return out[:size].tobytes()

        def dec(payload):
            return kernels._decode_tu(np.frombuffer(payload, np.uint8)[1:], planes, h, w, n, 1, None, 1 << 40)[0]
    return enc, dec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", type=Path, help="another _kernels.py to time side by side")
    parser.add_argument("--levels", type=int, nargs="+", default=[8])
    parser.add_argument("--layers", nargs="+", default=["layer22", "layer59", "layer34", "layer80"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--inner", type=int, default=5, help="passes over the images per timed call")
    parser.add_argument("--breakdown", action="store_true", help="time the encoder with parts switched off")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(np.load(ACTIVATIONS), args.layers, args.levels[0], args.rounds)
        return
    sides = {"new": K}
    if args.against:
        sides["old"] = load_kernels(args.against)
    data = np.load(ACTIVATIONS)
    prefix = (lambda s: f"{s} ") if args.against else (lambda s: "")
    head = "| tensor | N | coder | bits/el | bins/el | " + " | ".join(
        f"{prefix(s)}enc M el/s | {prefix(s)}dec M el/s" for s in sides)
    if args.against:
        head += " | enc new/old | dec new/old"
    head += " | " + " | ".join(f"{prefix(s)}best enc | {prefix(s)}best dec" for s in sides)
    print(head + " |")
    print("|" + "---|" * (head.count("|")))
    cases = []
    for layer in args.layers:
        x = data[layer]
        lo = float(np.percentile(x, 0.1)) if layer in SIGNED else 0.0
        hi = float(np.percentile(x, 99.9))
        for n in args.levels:
            q = Quantizer.uniform(lo, hi, n)
            coder = default_coder(q)
            images = [q.quantize(frame) for frame in x]
            calls = {s: [coder_calls(k, lv, n, coder) for lv in images] for s, k in sides.items()}
            payloads = {s: [enc() for enc, _ in c] for s, c in calls.items()}
            for s in sides:
                assert payloads[s] == payloads["new"], f"{layer} N={n}: payloads differ between kernels"
                for (enc, dec), p, lv in zip(calls[s], payloads[s], images):
                    assert np.array_equal(dec(p).reshape(lv.shape), lv)
            cases.append((layer, n, coder, images, calls, payloads))
    # Every case, side and direction once per round, the cases in a rotated order: load that drifts over the
    # run hits every row alike.
    rates: dict[tuple[int, str, str], list[float]] = {}
    for r in range(args.rounds):
        order = list(range(len(cases)))
        for index in order[r % len(order):] + order[:r % len(order)]:
            _, _, _, images, calls, payloads = cases[index]
            elements = sum(lv.size for lv in images) * args.inner
            for s in sides:
                for what in ("enc", "dec"):
                    start = time.process_time()
                    for _ in range(args.inner):
                        for (enc, dec), p in zip(calls[s], payloads[s]):
                            enc() if what == "enc" else dec(p)
                    rates.setdefault((index, s, what), []).append(elements / (time.process_time() - start) / 1e6)
    for index, (layer, n, coder, images, calls, payloads) in enumerate(cases):
        elements = sum(lv.size for lv in images)
        bits = 8 * sum(len(p) - 1 for p in payloads["new"]) / elements
        bins = sum(bin_count(lv, n, coder) for lv in images)
        row = [f"{layer} {images[0].shape}", str(n), coder.name.lower(), f"{bits:.2f}", f"{bins / elements:.2f}"]
        for s in sides:
            row += [f"{statistics.median(rates[(index, s, 'enc')]):.0f}",
                    f"{statistics.median(rates[(index, s, 'dec')]):.0f}"]
        if args.against:
            for what in ("enc", "dec"):
                ratio = [a / b for a, b in zip(rates[(index, "new", what)], rates[(index, "old", what)])]
                se = statistics.stdev(ratio) / len(ratio) ** 0.5
                row.append(f"{statistics.mean(ratio):.3f} +- {se:.3f}")
        for s in sides:
            row += [f"{max(rates[(index, s, 'enc')]):.0f}", f"{max(rates[(index, s, 'dec')]):.0f}"]
        print("| " + " | ".join(row) + " |", flush=True)

if __name__ == "__main__":
    main()
