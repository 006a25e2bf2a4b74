"""The quantizer kernel before and after the spacing guess (issue 19 item 5), interleaved, in CPU time.

Above 32 thresholds `codec._kernels._quantize` used a binary search per element; it now guesses the level from the
thresholds' mean spacing and walks to the exact count (the same levels: tests/codec/test_quantizer.py). This times
both on the head's real cut-60 tensors of a video, with the shipped ladder's quantizers: each round quantizes
every frame once per kernel, in a rotated order; process CPU time of one thread; the table gives the median and
the best round in M elements/s. The "binary search" kernel here is the one the codec shipped before, kept only
for this comparison.

    python bench/quantize_speed.py --video vtest --points 10 14 16 19 --frames 40 --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rate_control import DATA, decimated_frames, video_path  # noqa: E402


@njit(cache=True, nogil=True)
def binary_search(values, thresholds, out):
    """The kernel as it was above 32 thresholds: a binary search per element (NaN ignored here)."""
    m = thresholds.size
    for i in range(values.size):
        v = values[i]
        lo = 0
        hi = m
        while lo < hi:
            mid = (lo + hi) >> 1
            if thresholds[mid] < v:
                lo = mid + 1
            else:
                hi = mid
        out[i] = lo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default="vtest")
    parser.add_argument("--points", nargs="+", type=int, default=[10, 14, 16, 19])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    import torch

    from splitinfer.codec import _kernels
    from splitinfer.codec.ladder import CodecLadder
    from splitinfer.dnn import load_model
    from splitinfer.services.profiles import packaged_profile

    torch.set_num_threads(1)
    model = load_model("yolo-fastest-1.1-xl", weights=DATA / "models" / "yolo-fastest-1.1")
    ladder = CodecLadder.load(packaged_profile(model.name, "ladder"))
    split = model.split(str(ladder.cut))
    tensors = []
    with torch.no_grad():
        for _, image in decimated_frames(video_path(args.video), 1e9, None, args.frames):
            x, _ = model.preprocess(image)
            tensors += [np.ravel(v.numpy()).astype(np.float32) for v in split.head(x).values()]
    elements = sum(t.size for t in tensors)
    print(f"| video | point | levels | kernel | M el/s, median | best round |\n|---|---|---|---|---|---|")
    for index in args.points:
        point = ladder.points[index]
        quantizer = point.quantizer or next(iter(point.tensors.values()))
        thresholds = quantizer._thresholds32
        out = np.empty(max(t.size for t in tensors), np.uint8)
        kernels = {"binary search (before)": lambda t: binary_search(t, thresholds, out[:t.size]),
                   "spacing guess (now)": lambda t: _kernels._quantize(t, thresholds, out[:t.size])}
        for run in kernels.values():
            run(tensors[0])  # compile
        seconds: dict[str, list[float]] = {name: [] for name in kernels}
        names = list(kernels)
        for r in range(args.rounds):
            for name in names[r % 2:] + names[:r % 2]:
                started = time.process_time()
                for t in tensors:
                    kernels[name](t)
                seconds[name].append(time.process_time() - started)
        for name in names:
            speeds = [elements / s / 1e6 for s in seconds[name]]
            print(f"| {args.video} | {index} | {quantizer.levels} | {name} | {statistics.median(speeds):.0f} | "
                  f"{max(speeds):.0f} |")


if __name__ == "__main__":
    main()
