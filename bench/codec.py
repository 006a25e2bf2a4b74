"""Benchmark of the feature codec on real Yolo-Fastest-1.1-XL tensors: rate, speed, gap to the ideal cost, zlib.

    python bench/codec.py                      # all tables (activations + video; about a minute)
    python bench/codec.py --skip-video         # without the temporal table (no torch/model needed)

Tables (Markdown):
  1. per tensor, level count and coder: bits per element of the real payload, its gap to the ideal
     adaptive cost (sum of -log2 p over all bins), encode/decode throughput of the entropy stage and of
     the whole codec (quantize + code), side by side with zlib -1 / -9 on the same uint8 index array;
  2. temporal contexts on consecutive frames of the shared video against intra coding;
  3. cold start in a fresh process: import + first encode/decode, with the numba cache warm and empty.

Throughput is elements per second of the calling thread's CPU time (time.thread_time), median of
--repeat runs, so other load on the machine inflates it less than wall time would; one core, numba
kernels are single-threaded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from splitinfer.codec import (
    Coder,
    Quantizer,
    decode,
    decode_indices,
    default_coder,
    encode,
    encode_indices,
    ideal_cost_bits,
)
from splitinfer.sample_data import shared_data_dir

SHARED = shared_data_dir()
ACTIVATIONS = SHARED / "activations" / "yolo-fastest-1.1-xl.npz"
VIDEO = SHARED / "video" / "one-by-one-person-detection.mp4"
WEIGHTS = SHARED / "models" / "yolo-fastest-1.1" / "yolo-fastest-1.1-xl.weights"
SIGNED_LAYERS = ("layer34", "layer80")  # linear shortcut outputs; layer22, layer59 are leaky


def cpu_median(fn: Callable[[], object], repeat: int) -> float:
    """Median thread CPU seconds of fn()."""
    times = []
    for _ in range(repeat):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def clip_range(x: np.ndarray, layer: str) -> tuple[float, float]:
    """Signed tensors: [0.1, 99.9] percentiles; leaky ones: [0, 99.9 percentile] (negatives clipped, as in the paper)."""
    high = float(np.percentile(x, 99.9))
    low = float(np.percentile(x, 0.1)) if layer in SIGNED_LAYERS else 0.0
    return low, high


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def activation_table(layers: list[str], levels_list: list[int], repeat: int) -> str:
    with np.load(ACTIVATIONS) as data:
        tensors = {layer: data[layer] for layer in layers}
    rows = []
    bar = tqdm(total=len(tensors) * len(levels_list), desc="activation table", file=sys.stderr, dynamic_ncols=True)
    for layer, x in tensors.items():
        low, high = clip_range(x, layer)
        for levels in levels_list:
            bar.update(1)
            quantizer = Quantizer.uniform(low, high, levels)
            q = quantizer.quantize(x)
            raw = q.tobytes()
            n = q.size
            z1 = zlib.compress(raw, 1)
            z9 = zlib.compress(raw, 9)
            t_z1 = cpu_median(lambda: zlib.compress(raw, 1), repeat)
            t_z9 = cpu_median(lambda: zlib.compress(raw, 9), max(1, repeat // 3))
            for coder in (Coder.BIN_CONTEXTS, Coder.NEIGHBOUR_CONTEXTS, Coder.SIGNED_NEIGHBOUR_CONTEXTS):
                payload = encode_indices(q, levels, coder)
                assert np.array_equal(decode_indices(payload, q.shape, levels, coder), q)
                ideal = ideal_cost_bits(q, levels, coder)
                t_enc = cpu_median(lambda: encode_indices(q, levels, coder), repeat)
                t_dec = cpu_median(lambda: decode_indices(payload, q.shape, levels, coder), repeat)
                t_full_enc = cpu_median(lambda: encode(x, quantizer, coder=coder), repeat)
                tensor = encode(x, quantizer, coder=coder)
                t_full_dec = cpu_median(lambda: decode(tensor), repeat)
                mark = " *" if coder is default_coder(quantizer) else ""
                rows.append([
                    f"{layer} {tuple(x.shape)}", str(levels), coder.name.lower() + mark,
                    f"{8 * len(payload) / n:.3f}", f"{len(payload)}",
                    f"{(8 * len(payload) / ideal - 1) * 100:+.3f}" if ideal else "-",
                    f"{n / t_enc / 1e6:.0f}", f"{n / t_dec / 1e6:.0f}",
                    f"{n / t_full_enc / 1e6:.0f}", f"{n / t_full_dec / 1e6:.0f}",
                    f"{len(z1)} ({n / t_z1 / 1e6:.0f})", f"{len(z9)} ({n / t_z9 / 1e6:.1f})",
                    f"{(1 - len(payload) / len(z9)) * 100:.0f} %",
                ])
    header = ["tensor", "N", "coder (* default)", "bits/el", "bytes", "gap to ideal %", "enc M el/s",
              "dec M el/s", "encode() M el/s", "decode() M el/s", "zlib-1 bytes (M el/s)",
              "zlib-9 bytes (M el/s)", "smaller than zlib-9"]
    bar.close()
    return markdown(header, rows)


def video_levels(frames: int) -> dict[str, np.ndarray]:
    """Head tensors (layers 22, 59, 80) of the first `frames` frames of the shared video, float32."""
    import cv2
    import torch

    from splitinfer.dnn import load_model

    torch.set_num_threads(1)
    model = load_model("yolo-fastest-1.1-xl", weights=str(WEIGHTS))
    capture = cv2.VideoCapture(str(VIDEO))
    out: dict[str, list[np.ndarray]] = {}
    try:
        with torch.no_grad():
            for _ in range(frames):
                ok, image = capture.read()
                if not ok:
                    break
                x, _ = model.preprocess(image)
                for cut in ("22", "59", "80"):
                    for name, value in model.split(cut).head(x).items():
                        if name == f"layer{cut}":
                            out.setdefault(name, []).append(value.numpy()[0])
    finally:
        capture.release()
    return {name: np.stack(values) for name, values in out.items()}


def temporal_table(frames: int, levels_list: list[int], repeat: int) -> str:
    tensors = video_levels(frames)
    rows = []
    bar = tqdm(total=len(tensors) * len(levels_list), desc="temporal table", file=sys.stderr, dynamic_ncols=True)
    for layer, x in tensors.items():
        low, high = clip_range(x, layer)
        for levels in levels_list:
            bar.update(1)
            quantizer = Quantizer.uniform(low, high, levels)
            q = quantizer.quantize(x)
            intra_coder = default_coder(quantizer)
            intra = sum(len(encode_indices(q[f], levels, intra_coder)) for f in range(1, len(q)))
            inter = 0
            for f in range(1, len(q)):
                payload = encode_indices(q[f], levels, Coder.TEMPORAL_CONTEXTS, reference=q[f - 1])
                assert np.array_equal(
                    decode_indices(payload, q[f].shape, levels, Coder.TEMPORAL_CONTEXTS, reference=q[f - 1]), q[f])
                inter += len(payload)
            n = q[1:].size
            t_enc = cpu_median(lambda: encode_indices(q[1], levels, Coder.TEMPORAL_CONTEXTS, reference=q[0]), repeat)
            payload = encode_indices(q[1], levels, Coder.TEMPORAL_CONTEXTS, reference=q[0])
            t_dec = cpu_median(lambda: decode_indices(payload, q[1].shape, levels, Coder.TEMPORAL_CONTEXTS,
                                                      reference=q[0]), repeat)
            rows.append([
                f"{layer} {tuple(x.shape[1:])}", str(levels), f"{len(q) - 1}",
                f"{np.mean(q[1:] != q[:-1]) * 100:.2f} %",
                f"{8 * intra / n:.3f} ({intra_coder.name.lower()})", f"{8 * inter / n:.3f}",
                f"{(1 - inter / intra) * 100:.1f} %",
                f"{q[1].size / t_enc / 1e6:.0f}", f"{q[1].size / t_dec / 1e6:.0f}",
            ])
    header = ["tensor", "N", "frames coded", "levels changed", "intra bits/el", "temporal bits/el", "saving",
              "temporal enc M el/s", "temporal dec M el/s"]
    bar.close()
    return markdown(header, rows)


_COLD = """
import sys, time
if "--no-scipy" in sys.argv:
    sys.modules["scipy"] = None  # as in an install without the bench extra: numba then skips its BLAS probe
t0 = time.perf_counter()
import numpy as np
from splitinfer.codec import Quantizer, encode, decode, Coder
t1 = time.perf_counter()
x = np.random.default_rng(0).normal(size=(1, 48, 20, 20)).astype(np.float32)
q = Quantizer.uniform(-2.0, 2.0, 6)
for coder in (Coder.NEIGHBOUR_CONTEXTS, Coder.SIGNED_NEIGHBOUR_CONTEXTS):
    decode(encode(x, q, coder=coder))
t2 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""


def cold_start_table() -> str:
    """Import + first encode/decode of two coders in fresh processes (median of 3 wall-clock runs each)."""

    def run(env: dict[str, str], *flags: str, fresh_cache: bool = False) -> list[str]:
        results = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as empty:
                run_env = {**env, "NUMBA_CACHE_DIR": empty} if fresh_cache else env
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-c", _COLD, *flags], env=run_env, capture_output=True,
                                      text=True, check=True)
                total = time.perf_counter() - start
            results.append((*(float(v) for v in done.stdout.split()), total))
        imported, first, total = (statistics.median(column) for column in zip(*results))
        return [f"{imported:.2f}", f"{first:.2f}", f"{imported + first:.2f}", f"{total:.2f}"]

    base = dict(os.environ)
    subprocess.run([sys.executable, "-c", _COLD], env=base, capture_output=True, check=True)  # fill the cache
    rows = [
        ["numba cache warm (every start after the first)", *run(base)],
        ["cache warm, scipy not installed (runtime dependencies only)", *run(base, "--no-scipy")],
    ]
    rows.append(["numba cache empty (first start after install: compiles)", *run(base, fresh_cache=True)])
    return markdown(["fresh process", "import numpy + codec s", "first encode+decode s", "codec cold start s",
                     "whole process s"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="layer22,layer59,layer34,layer80")
    parser.add_argument("--levels", default="4,6,8")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--frames", type=int, default=30, help="video frames for the temporal table")
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    if not ACTIVATIONS.exists():
        print(f"{ACTIVATIONS} is absent: the benchmark needs ../shared/data (or $SPLITINFER_SHARED_DATA).")
        return 1
    levels_list = [int(v) for v in args.levels.split(",")]
    print(f"## Codec on real activations ({ACTIVATIONS.name}, all samples)\n")
    print(activation_table(args.layers.split(","), levels_list, args.repeat))
    if not args.skip_video:
        print(f"\n## Temporal contexts on the shared video ({VIDEO.name}, first {args.frames} frames)\n")
        print(temporal_table(args.frames, levels_list, args.repeat))
    if not args.skip_cold:
        print("\n## Cold start\n")
        print(cold_start_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
