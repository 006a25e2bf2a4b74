"""Encoder speed in CPU time, side by side and interleaved: our codec, x265 (P frames) and JPEG of the input.

The same consecutive video frames' tensors at one cut go through
- ours: the model's default profile, intra (`encode`) and temporal contexts (intra every K frames), timed with
  `time.process_time` over all frames;
- x265 through ffmpeg's libx265, the channel tiling of bench/baselines/hevc.py, low-delay P frames (an IDR every
  K frames), presets ultrafast and medium, one thread, at the QP whose bytes are closest to ours (temporal):
  one long call over all frames and a one-frame call, both timed as the child's CPU time
  (`resource.getrusage(RUSAGE_CHILDREN)`); their difference over the extra frames is what a frame costs the
  encoder, process start-up and library load cancel;
- JPEG: `cv2.imencode` of the network's input picture at the given qualities (`time.process_time`).

Each round measures every codec once, in a rotated order; the tables give the median and interquartile range
over rounds of ms/frame and of the ratios taken within a round (paired).

    python bench/encoder_speed.py                                   # shared video, default profile, 150 frames
    python bench/encoder_speed.py --video /usr/share/doc/opencv-doc/examples/data/vtest.avi --cut 60
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines.tiling import tile

from splitinfer.sample_data import shared_data_dir

DATA = shared_data_dir()
YOLO = "yolo-fastest-1.1-xl"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class X265:
    """ffmpeg + libx265 on pre-tiled raw frames in a file; CPU seconds of the child and the coded bytes."""

    def __init__(self, frames: Sequence[np.ndarray], workdir: Path, keyint: int) -> None:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise SystemExit("ffmpeg is not on PATH: apt-get install -y ffmpeg (with libx265)")
        self.ffmpeg = ffmpeg
        self.height, self.width = frames[0].shape
        self.keyint = keyint
        self.count = len(frames)
        self.long = workdir / "long.gray"
        self.short = workdir / "short.gray"
        self.output = workdir / "out.hevc"
        self.long.write_bytes(b"".join(f.astype(np.uint8).tobytes() for f in frames))
        self.short.write_bytes(frames[0].astype(np.uint8).tobytes())

    def encode(self, source: Path, preset: str, qp: int) -> tuple[float, int]:
        """(CPU seconds of the ffmpeg child, bytes written) for one call on `source`."""
        params = [f"qp={qp}", f"keyint={self.keyint}", f"min-keyint={self.keyint}", "scenecut=0", "bframes=0",
                  "info=0", "pools=1", "frame-threads=1", "log-level=error"]
        command = [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-threads", "1", "-f", "rawvideo",
                   "-pix_fmt", "gray", "-s", f"{self.width}x{self.height}", "-r", "10", "-i", str(source),
                   "-c:v", "libx265", "-preset", preset, "-x265-params", ":".join(params), "-f", "hevc",
                   str(self.output)]
        before = _children_cpu()
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
        return _children_cpu() - before, self.output.stat().st_size

    def per_frame(self, preset: str, qp: int) -> tuple[float, float, int]:
        """(marginal CPU seconds per frame, one-frame call CPU seconds, bytes/frame of the long call)."""
        long_cpu, nbytes = self.encode(self.long, preset, qp)
        short_cpu, _ = self.encode(self.short, preset, qp)
        return (long_cpu - short_cpu) / (self.count - 1), short_cpu, nbytes / self.count


def _process_cpu(work: Callable[[], object], count: int, minimum: float = 0.2) -> float:
    """CPU seconds per item of `work()` (which handles `count` items), repeated until `minimum` seconds."""
    repeats, total = 0, 0.0
    while total < minimum:
        start = time.process_time()
        work()
        total += time.process_time() - start
        repeats += 1
    return total / (repeats * count)


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    q1, median, q3 = np.percentile(np.asarray(values, float), [25, 50, 75])
    return float(median), float(q1), float(q3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DATA / "video" / "one-by-one-person-detection.mp4")
    parser.add_argument("--images", type=Path, default=None,
                        help="a folder of images (sorted by name) instead of --video: unrelated pictures, so every "
                             "x265 P frame costs about an intra frame")
    parser.add_argument("--frames", type=int, default=150, help="consecutive frames from the start of the video")
    parser.add_argument("--match", choices=("temporal", "intra"), default="temporal",
                        help="which of ours the x265 QP is matched to in bytes/frame")
    parser.add_argument("--cut", default=None, help="default: the profile's cut")
    parser.add_argument("--profile", type=Path, default=None,
                        help="codec profile for ours (default: the model's packaged default profile)")
    parser.add_argument("--keyint", type=int, default=30, help="frames between intra frames, ours and x265")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--presets", default="ultrafast,medium")
    parser.add_argument("--qps", default="12,17,22,27,32,37", help="x265 QPs tried to match ours (temporal) in bytes")
    parser.add_argument("--jpeg", default="50,90")
    args = parser.parse_args(argv)

    import cv2
    import torch
    from common import calibration_histogram, input_to_bgr
    from splitinfer.codec import (
        CodecProfile,
        Coder,
        decode_levels,
        default_coder,
        encode,
        encode_levels,
        quantize_with_reference,
    )
    from splitinfer.codec.clip_range import mse_optimal_range
    from splitinfer.dnn import load_model
    from splitinfer.dnn.eval_images import iter_folder, iter_video
    from splitinfer.dnn.registry import get_spec

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    model = load_model(YOLO, weights=DATA / "models" / "yolo-fastest-1.1")
    profile_path = args.profile or Path(__file__).resolve().parents[1] / "dnn" / get_spec(YOLO).default_profile
    profile = CodecProfile.load(profile_path)
    args.cut = args.cut or profile.cut or model.default_cut
    if profile.cut not in (None, args.cut):
        raise SystemExit(f"{profile_path} is for cut {profile.cut}, not --cut {args.cut}: pass --profile")
    quantizer = profile.quantizer
    intra_coder = profile.coder if profile.coder not in (None, Coder.TEMPORAL_CONTEXTS) else default_coder(quantizer)

    split = model.split(args.cut)
    tensors, pictures = [], []
    source = args.images or args.video
    frames_in = (list(iter_folder(args.images))[: args.frames] if args.images
                 else iter_video(args.video, limit=args.frames))
    for frame in frames_in:
        x, _ = model.preprocess(frame.image)
        with torch.no_grad():
            (head,) = split.head(x).values()
        tensors.append(np.ascontiguousarray(head[0].float().numpy()))
        pictures.append(input_to_bgr(model, x))
    n = len(tensors)
    hist, _ = calibration_histogram(model, args.cut)
    wide = mse_optimal_range(hist, 256)
    frames = [tile(t, wide.clip_min, wide.clip_max, 8)[0] for t in tensors]

    def ours_intra() -> list[int]:
        return [encode(t, quantizer, coder=intra_coder).nbytes for t in tensors]

    def ours_temporal() -> list[int]:
        sizes, previous = [], None
        for i, t in enumerate(tensors):
            if i % args.keyint == 0:
                levels = quantizer.quantize(t)
                coded = encode_levels(levels, quantizer, coder=intra_coder)
            else:
                levels = quantize_with_reference(t, quantizer, previous, profile.hysteresis)
                coded = encode_levels(levels, quantizer, coder=Coder.TEMPORAL_CONTEXTS, reference=previous)
            previous = levels
            sizes.append(coded.nbytes)
        return sizes

    # A decode check that the temporal stream above is what the decoder reads (not timed).
    previous = None
    for i, t in enumerate(tensors[: args.keyint + 2]):
        levels = quantizer.quantize(t) if i % args.keyint == 0 else \
            quantize_with_reference(t, quantizer, previous, profile.hysteresis)
        coder = intra_coder if i % args.keyint == 0 else Coder.TEMPORAL_CONTEXTS
        reference = None if i % args.keyint == 0 else previous
        coded = encode_levels(levels, quantizer, coder=coder, reference=reference)
        assert np.array_equal(decode_levels(coded, reference=reference), levels)
        previous = levels

    qualities = [int(q) for q in args.jpeg.split(",") if q]
    jpeg_bytes = {q: float(np.mean([cv2.imencode(".jpg", p, [cv2.IMWRITE_JPEG_QUALITY, q])[1].size
                                    for p in pictures])) for q in qualities}
    intra_bytes = float(np.mean(ours_intra()))
    temporal_bytes = float(np.mean(ours_temporal()))
    presets = [p for p in args.presets.split(",") if p]
    with tempfile.TemporaryDirectory() as tmp:
        x265 = X265(frames, Path(tmp), args.keyint)
        chosen_qp: dict[str, int] = {}
        x265_bytes: dict[str, float] = {}
        for preset in presets:
            tried = {qp: x265.encode(x265.long, preset, qp)[1] / n for qp in (int(q) for q in args.qps.split(","))}
            target = temporal_bytes if args.match == "temporal" else intra_bytes
            qp = min(tried, key=lambda q: abs(np.log(tried[q] / target)))
            chosen_qp[preset], x265_bytes[preset] = qp, tried[qp]
        names = ([f"x265 {p}" for p in presets] + ["ours intra", "ours temporal"] + [f"JPEG Q{q}" for q in qualities])
        runs: dict[str, Callable[[], float]] = {
            **{f"x265 {p}": (lambda p=p: x265.per_frame(p, chosen_qp[p])) for p in presets},
            "ours intra": lambda: _process_cpu(ours_intra, n),
            "ours temporal": lambda: _process_cpu(ours_temporal, n),
            **{f"JPEG Q{q}": (lambda q=q: _process_cpu(
                lambda: [cv2.imencode(".jpg", p, [cv2.IMWRITE_JPEG_QUALITY, q]) for p in pictures], n))
               for q in qualities},
        }
        ours_intra()  # compiled kernels loaded before the first timed round
        seconds: dict[str, list[float]] = {name: [] for name in names}
        startup: dict[str, list[float]] = {name: [] for name in names if name.startswith("x265")}
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                result = runs[name]()
                if isinstance(result, tuple):
                    seconds[name].append(result[0])
                    startup[name].append(result[1])
                else:
                    seconds[name].append(result)
    nbytes = {**{f"x265 {p}": x265_bytes[p] for p in presets}, "ours intra": intra_bytes,
              "ours temporal": temporal_bytes, **{f"JPEG Q{q}": jpeg_bytes[q] for q in qualities}}
    settings = {**{f"x265 {p}": f"P frames, QP {chosen_qp[p]}, keyint {args.keyint}, 1 thread" for p in presets},
                "ours intra": f"{profile_path.name}, {intra_coder.name}",
                "ours temporal": f"TEMPORAL_CONTEXTS, intra every {args.keyint}, hysteresis {profile.hysteresis:g}",
                **{f"JPEG Q{q}": f"cv2.imencode, {pictures[0].shape[1]}x{pictures[0].shape[0]} input" for q in qualities}}
    print(f"\n{source.name}: {n} frames, cut {args.cut} {tuple(tensors[0].shape)}, {args.rounds} interleaved "
          f"rounds; CPU time per frame of the encoder alone (median [IQR] over rounds)\n")
    print(f"x265 QP matched to ours {args.match} in bytes/frame\n")
    print("| encoder | setting | bytes/frame | encode CPU ms/frame | one-frame call CPU ms |\n|---|---|---|---|---|")
    for name in names:
        med, q1, q3 = _quartiles([1000 * s for s in seconds[name]])
        one = f"{1000 * statistics.median(startup[name]):.0f}" if name in startup else ""
        print(f"| {name} | {settings[name]} | {nbytes[name]:,.0f} | {med:.3f} [{q1:.3f}, {q3:.3f}] | {one} |")
    print("\n| ratio (within each round) | median [IQR] |\n|---|---|")
    for ours in ("ours intra", "ours temporal"):
        for name in names:
            if not name.startswith("ours"):
                med, q1, q3 = _quartiles([a / b for a, b in zip(seconds[name], seconds[ours])])
                print(f"| {name} / {ours} | {med:.1f}x [{q1:.1f}, {q3:.1f}] |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
