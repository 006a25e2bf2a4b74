"""Head and tail latency per frame and tensor size at the candidate cuts of a Darknet model.

Candidate cuts are those where exactly one tensor crosses (no route/shortcut reaches over the cut);
--cuts picks others. Latency is the median over --repeat rounds of one 1-image batch, with --threads
torch threads, on a real image; each round times the full model and every cut's head and tail in turn,
so load from other processes spreads evenly over all rows.

    python bench/split_latency.py --model yolo-fastest-1.1-xl --weights ../shared/data/models/yolo-fastest-1.1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from tqdm import tqdm

from splitinfer.dnn import load_model
from splitinfer.dnn.eval_images import read_image
from splitinfer.sample_data import shared_data_dir

_SHARED = shared_data_dir()


def _time_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolo-fastest-1.1-xl")
    parser.add_argument("--weights", default=str(_SHARED / "models" / "yolo-fastest-1.1"))
    parser.add_argument("--image", default=str(_SHARED / "images" / "dog.jpg"))
    parser.add_argument("--cuts", nargs="*", help="cuts to measure (default: every single-tensor cut)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = load_model(args.model, weights=args.weights)
    x, _ = model.preprocess(read_image(args.image))
    cuts = args.cuts or [c for c in model.cuts() if len(model.split(c).tensors) == 1]
    splits = [model.split(cut) for cut in cuts]
    sent = [split.head(x) for split in splits]  # also the warm-up
    model(x)
    full, heads, tails = [], [[] for _ in splits], [[] for _ in splits]
    for _ in tqdm(range(args.repeat), desc="timing head/tail per cut", file=sys.stderr, dynamic_ncols=True):
        full.append(_time_ms(lambda: model(x)))
        for i, split in enumerate(splits):
            heads[i].append(_time_ms(lambda: split.head(x)))
            tails[i].append(_time_ms(lambda: split.tail(sent[i])))
    input_elements = x[0].numel()
    print(f"model {model.name}, input {tuple(x.shape[1:])}, torch threads {args.threads}, median of {args.repeat} "
          f"rounds; full model {statistics.median(full):.2f} ms")
    print("| cut | layer | tensor(s) (C, H, W) | signed | elements | / input | float32 KiB | head ms | tail ms | head+tail ms |")
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|")
    network = model.network
    for split, head_times, tail_times in zip(splits, heads, tails):
        head_ms, tail_ms = statistics.median(head_times), statistics.median(tail_times)
        shapes = " + ".join(f"{s.name} {s.shape}" for s in split.tensors)
        signed = "/".join("yes" if s.signed else "no" for s in split.tensors)
        kind = network.infos[int(split.cut)].type if hasattr(network, "infos") else split.cut
        print(f"| {split.cut} | {kind} | {shapes} | {signed} | {split.numel} | {split.numel / input_elements:.2f} | "
              f"{4 * split.numel / 1024:.0f} | {head_ms:.2f} | {tail_ms:.2f} | {head_ms + tail_ms:.2f} |")

if __name__ == "__main__":
    main()
