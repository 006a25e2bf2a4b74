"""Inter-frame encode speed with and without rate-distortion optimized quantization, interleaved, in CPU time.

The head of Yolo-Fastest-1.1-XL at the ladder's cut runs over the first --frames frames of a video; each round codes
every inter frame (against the previous frame's levels, as TemporalEncoder does) once per variant, in a rotated
order: quantize with the point's hysteresis (`quantize_with_reference`), with or without the point's RDO refinement
(its rdo_lambda and per-channel weights; --lambda overrides the lambda), then the inter coder (TEMPORAL_CONTEXTS
v2). Speed is elements per second of process CPU time (one thread); the table gives the median and the best round,
and the bits/element of what each variant sends.

    python bench/rdo_speed.py --video vtest --points 10 14 16 --rounds 21
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rate_control import DATA, decimated_frames, video_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default="shared")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--points", type=int, nargs="+", default=[5, 8], help="ladder points (quantizer, hysteresis)")
    parser.add_argument("--lambda", dest="lam", type=float, default=None, help="default: each point's rdo_lambda")
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()

    import torch

    from splitinfer.codec import Coder, encode_levels, quantize_with_reference
    from splitinfer.codec.entropy import INTER_VERSION
    from splitinfer.codec.ladder import CodecLadder
    from splitinfer.dnn import load_model
    from splitinfer.services.profiles import packaged_profile

    torch.set_num_threads(1)
    model = load_model("yolo-fastest-1.1-xl", weights=DATA / "models" / "yolo-fastest-1.1")
    ladder = CodecLadder.load(packaged_profile(model.name, "ladder"))
    split = model.split(ladder.cut)
    name = split.tensors[0].name
    tensors = [split.head(model.preprocess(image)[0])[name].numpy()
               for _, image in decimated_frames(video_path(args.video), float("inf"), None, args.frames)]
    elements = tensors[0].size * (len(tensors) - 1)

    def run(point: int, lam: float) -> tuple[float, int]:
        profile = ladder.points[point]
        quantizer = profile.quantizer_for(name)
        started = time.process_time()
        previous = quantizer.quantize(tensors[0])
        sent = 0
        for x in tensors[1:]:
            levels = quantize_with_reference(x, quantizer, previous, profile.hysteresis, rdo_lambda=lam,
                                             plane_weights=profile.rdo_weights.get(name) if lam else None)
            sent += encode_levels(levels, quantizer, coder=Coder.TEMPORAL_CONTEXTS, reference=previous,
                                  coder_version=INTER_VERSION).nbytes
            previous = levels
        return time.process_time() - started, sent

    items = [(p, lam) for p in args.points
             for lam in (0.0, ladder.points[p].rdo_lambda if args.lam is None else args.lam)]
    for item in items:
        run(*item)  # compile and warm
    seconds: dict[tuple[int, float], list[float]] = {item: [] for item in items}
    sizes: dict[tuple[int, float], int] = {}
    for r in range(args.rounds):
        for item in items[r % len(items):] + items[:r % len(items)]:
            spent, sent = run(*item)
            seconds[item].append(spent)
            sizes[item] = sent
    print(f"{args.video}: {len(tensors) - 1} inter frames of {name} {tensors[0].shape}, {args.rounds} rounds")
    print("| point | levels | hysteresis | rdo_lambda | inter bits/el | enc M el/s, median | best round |")
    print("|---|---|---|---|---|---|---|")
    for (point, lam), values in seconds.items():
        profile = ladder.points[point]
        print(f"| {point} | {profile.quantizer_for(name).levels} | {profile.hysteresis:g} | {lam:g} | "
              f"{8 * sizes[point, lam] / elements:.3f} | {elements / statistics.median(values) / 1e6:.0f} | "
              f"{elements / min(values) / 1e6:.0f} |")


if __name__ == "__main__":
    main()
