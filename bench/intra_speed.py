"""Entropy-coder throughput at 1-2 bits/element, one core, CPU time; optionally A/B against another _kernels.py.

    python bench/intra_speed.py                                   # the current kernels
    python bench/intra_speed.py --against /tmp/old/kernels_old.py   # side by side with a copy of older kernels

Tensors: ../shared/data/activations/yolo-fastest-1.1-xl.npz, one image at a time (what the edge codes),
uniform quantizer on [0.1th, 99.9th percentile] (signed layers) or [0, 99.9th] (leaky), N levels; the
default coder for each. Each round times every kernel once over all images (time.process_time), the
kernels interleaved round by round, so drifting load on a shared machine hits both sides alike; the
table gives the median over rounds of M elements/s, and for --against the per-round ratio new/old
(mean +- standard error). Payloads of both sides are asserted byte-identical.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from splitinfer.codec import Coder, Quantizer, default_coder
from splitinfer.codec import _kernels as new_kernels
from splitinfer.codec.entropy import most_probable_level

ACTIVATIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "activations" / "yolo-fastest-1.1-xl.npz"
SIGNED = ("layer34", "layer80")


def load_kernels(path: Path):
    """Import a copy of _kernels.py under its own (importable, so numba can cache it) module name."""
    sys.path.insert(0, str(path.resolve().parent))
    return importlib.import_module(path.stem)


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
    args = parser.parse_args()
    sides = {"new": new_kernels}
    if args.against:
        sides["old"] = load_kernels(args.against)
    data = np.load(ACTIVATIONS)
    head = "| tensor | N | coder | bits/el | bins/el | " + " | ".join(
        f"{s} enc M el/s | {s} dec M el/s" for s in sides)
    if args.against:
        head += " | enc new/old | dec new/old"
    print(head + " |")
    print("|" + "---|" * (head.count("|")))
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
            elements = sum(lv.size for lv in images) * args.inner
            bits = 8 * sum(len(p) - 1 for p in payloads["new"]) / (elements / args.inner)
            bins = sum(int(np.minimum(lv.astype(np.int64) + 1, n - 1).sum()) if coder is Coder.NEIGHBOUR_CONTEXTS
                       else 0 for lv in images)
            rates: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for s in sides:
                    for what in ("enc", "dec"):
                        start = time.process_time()
                        for _ in range(args.inner):
                            for (enc, dec), p in zip(calls[s], payloads[s]):
                                enc() if what == "enc" else dec(p)
                        rates.setdefault((s, what), []).append(elements / (time.process_time() - start) / 1e6)
            row = [f"{layer} {images[0].shape}", str(n), coder.name.lower(), f"{bits:.2f}",
                   f"{bins / (elements / args.inner):.2f}" if bins else "-"]
            for s in sides:
                row += [f"{statistics.median(rates[(s, 'enc')]):.0f}", f"{statistics.median(rates[(s, 'dec')]):.0f}"]
            if args.against:
                for what in ("enc", "dec"):
                    r = [a / b for a, b in zip(rates[("new", what)], rates[("old", what)])]
                    se = statistics.stdev(r) / len(r) ** 0.5
                    row.append(f"{statistics.mean(r):.3f} +- {se:.3f}")
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
