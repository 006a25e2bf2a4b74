"""Model runtimes side by side: speed (CPU time), agreement, fidelity, the demo's frames/s, and eval under load.

    python bench/runtime.py                      # every table (~15 min on 2 cores)
    python bench/runtime.py --only speed,agreement --rounds 20

Variants: torch eager as it was (batch norms unfolded), torch with batch norms folded (what load_model now
gives), ONNX Runtime and OpenVINO (fp32), all of Yolo-Fastest-1.1-XL at cut 60 with one thread per call.
- speed: head, tail and whole-model CPU time (time.process_time) per call on real val2017 images, variants
  interleaved within each round (the order rotates every round); the speed-up is the mean of per-round
  ratios against eager, with its standard error over rounds.
- agreement: the largest absolute difference from eager at the cut and at the outputs, over the images, and
  as a fraction of the shipped profile's quantizer step at the cut.
- fidelity: detections lost + added (score >= 0.25, same class, IoU >= 0.5) against eager, with the whole model
  and through the codec at cut 60 with the shipped profile, on val2017 (SE over images) and on the shared video
  (SE by block jackknife over 30-frame blocks); AP50 of each on val2017.
- demo: `splitinfer demo --frames 100 --runtime R`, runtimes interleaved, after one untimed run each (exports
  cached): its throughput line, and the demo process's CPU seconds per frame (edge and cloud in one process).
- int8: the head at cut 60 quantized by ONNX Runtime's static quantization (QDQ, per-channel int8 weights,
  uint8 activations, calibrated on 40 calib2017 images), against the fp32 export: CPU time interleaved in ONNX
  Runtime and OpenVINO, the largest difference at the cut, and detections lost + added through the codec on
  val2017 (held out from the calibration).
- load: `splitinfer eval` of 40 val2017 images alone, then beside a second eval doing the same, with the
  default thread policy and with 2 threads (torch's old default on this machine): images/s and the ratio.
Nothing here is tuned on its results: no setting is chosen from them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPLITINFER_SHARED_DATA", REPO.parent / "shared" / "data"))
WEIGHTS = DATA / "models" / "yolo-fastest-1.1"
VAL = DATA / "coco-mini" / "val2017"
VIDEO = DATA / "video" / "one-by-one-person-detection.mp4"
MODEL, CUT = "yolo-fastest-1.1-xl", "60"
PROFILE = REPO / "dnn" / "profiles" / f"{MODEL}.json"  # the shipped default profile (cut 60)
PARTS = ("head", "tail", "whole")
LIVE_THRESHOLD = 0.25
BLOCK = 30


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def load_variants() -> dict:
    """name -> SplitModel, for every variant whose runtime is installed."""
    from splitinfer.dnn import load_model
    from splitinfer.dnn.runtime import RuntimeConfig
    from splitinfer.runtimes import missing_packages

    variants = {"eager (unfolded)": load_model(MODEL, weights=WEIGHTS, fold_batch_norm=False),
                "torch (folded)": load_model(MODEL, weights=WEIGHTS)}
    for runtime in ("onnxruntime", "openvino"):
        if missing_packages(runtime):
            print(f"skipping {runtime}: not installed (pip install 'splitinfer[{runtime}]')", file=sys.stderr)
            continue
        variants[runtime] = load_model(MODEL, weights=WEIGHTS, runtime=RuntimeConfig(runtime, threads=1))
    return variants


def val_images(limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    from splitinfer.dnn.eval_images import iter_folder

    frames = [(f.key, f.image) for f in iter_folder(VAL) if f.image is not None]
    return frames[:limit] if limit else frames


def calls(model, x, sent) -> dict[str, Callable[[], object]]:
    split = model.split(CUT)
    return {"head": lambda: split.head(x), "tail": lambda: split.tail(sent), "whole": lambda: model(x)}


def speed(variants: dict, rounds: int, images: list) -> str:
    eager = variants["eager (unfolded)"]
    inputs = []
    for _, image in images:
        x, _ = eager.preprocess(image)
        inputs.append((x, eager.split(CUT).head(x)))
    names = list(variants)
    for model in variants.values():  # compile and warm every graph first
        for fn in calls(model, *inputs[0]).values():
            fn()
    times = {(v, p): [] for v in names for p in PARTS}
    for r in range(rounds):
        x, sent = inputs[r % len(inputs)]
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            for part, fn in calls(variants[name], x, sent).items():
                started = time.process_time()
                fn()
                times[(name, part)].append(time.process_time() - started)
    rows = []
    for name in names:
        row = [name]
        for part in PARTS:
            ms = 1000 * np.array(times[(name, part)])
            ratios = np.array(times[("eager (unfolded)", part)]) / np.maximum(np.array(times[(name, part)]), 1e-9)
            se = ratios.std(ddof=1) / math.sqrt(len(ratios))
            row.append(f"{np.median(ms):.1f} [{np.percentile(ms, 25):.1f}-{np.percentile(ms, 75):.1f}]")
            row.append(f"{ratios.mean():.2f} +- {se:.2f}")
        rows.append(row)
    header = ["variant"] + [f"{p} {k}" for p in PARTS for k in ("ms [IQR]", "speed-up")]
    return markdown(header, rows)


def agreement(variants: dict, images: list) -> str:
    from splitinfer.codec import CodecProfile

    quantizer = CodecProfile.load(str(PROFILE)).quantizer_for(f"layer{CUT}")
    step = (quantizer.clip_max - quantizer.clip_min) / (quantizer.levels - 1)
    eager = variants["eager (unfolded)"]
    rows = []
    for name, model in variants.items():
        if model is eager:
            continue
        cut_diff = out_diff = 0.0
        for _, image in images:
            x, _ = eager.preprocess(image)
            ours, theirs = model.split(CUT).head(x), eager.split(CUT).head(x)
            cut_diff = max(cut_diff, max(float((ours[k] - theirs[k]).abs().max()) for k in theirs))
            out_diff = max(out_diff, max(float((a - b).abs().max()) for a, b in zip(model(x), eager(x))))
        rows.append([name, f"{cut_diff:.2g}", f"{cut_diff / step:.1e}", f"{out_diff:.2g}"])
    return markdown(["variant", "largest difference at the cut", "in quantizer steps", "at the outputs"], rows) + \
        f"\n\n(quantizer step at the cut: {step:.3g}, from the shipped profile; {len(images)} val2017 images)"


def detections(model, frames: list, profile) -> tuple[list, list]:
    """Per frame: the whole model's detections, and the detections through the codec at the cut."""
    import torch

    from splitinfer.dnn.eval_codec import SequenceRoundtrip

    whole, coded = [], []
    split = model.split(CUT)
    roundtrip = SequenceRoundtrip(profile)
    for image in frames:
        x, info = model.preprocess(image)
        whole.append(model.postprocess(model(x), info))
        sent = split.head(x)
        decoded, _ = roundtrip({k: v[0].numpy() for k, v in sent.items()})
        coded.append(model.postprocess(split.tail({k: torch.from_numpy(v[None]) for k, v in decoded.items()}), info))
    return whole, coded


def _changes(reference: list, other: list) -> np.ndarray:
    from splitinfer.dnn.eval_coco import count_lost_added

    keep = lambda ds: [d for d in ds if d.score >= LIVE_THRESHOLD]  # noqa: E731
    return np.array([sum(count_lost_added(keep(r), keep(o))) for r, o in zip(reference, other)], dtype=float)


def fidelity(variants: dict, video_frames: int) -> str:
    from splitinfer.codec import CodecProfile
    from splitinfer.dnn.evaluation import block_se
    from splitinfer.dnn.eval_images import iter_video

    profile = CodecProfile.load(str(PROFILE))
    images = [image for _, image in val_images()]
    video = [f.image for f in iter_video(VIDEO, limit=video_frames) if f.image is not None]
    results = {name: (detections(m, images, profile), detections(m, video, profile)) for name, m in variants.items()}
    (ref_val_whole, ref_val_coded), (ref_vid_whole, ref_vid_coded) = results["eager (unfolded)"]
    rows = []
    for name, ((val_whole, val_coded), (vid_whole, vid_coded)) in results.items():
        row = [name]
        for ref, ours, block in ((ref_val_whole, val_whole, 1), (ref_val_coded, val_coded, 1),
                                 (ref_vid_whole, vid_whole, BLOCK), (ref_vid_coded, vid_coded, BLOCK)):
            changes = _changes(ref, ours)
            se = block_se(changes, block)
            row.append(f"{int(changes.sum())} +- {se:.1f}")
        rows.append(row)
    header = ["variant", f"val whole ({len(images)} images)", "val coded, cut 60",
              f"video whole ({len(video)} frames)", "video coded, cut 60"]
    return markdown(header, rows) + "\n\n(detections lost + added against eager, score >= 0.25; +- SE)"


def int8(rounds: int) -> str:
    import glob
    import tempfile

    import openvino as ov
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

    from splitinfer.codec import CodecProfile
    from splitinfer.dnn.evaluation import block_se
    from splitinfer.dnn import load_model
    from splitinfer.dnn.eval_images import iter_folder
    from splitinfer.dnn.eval_codec import SequenceRoundtrip
    from splitinfer.dnn.runtime import RuntimeConfig
    from splitinfer.dnn.weights import cache_dir

    model = load_model(MODEL, weights=WEIGHTS, runtime=RuntimeConfig("onnxruntime", threads=1))
    calibration = [model.preprocess(f.image)[0].numpy() for f in iter_folder(VAL.parent / "calib2017")][:40]
    val = [(model.preprocess(image)) for _, image in val_images()]
    model.split(CUT).head(val[0][0])  # exports the fp32 head into the cache
    fp32 = sorted(glob.glob(str(cache_dir() / "onnx" / f"{MODEL}-head-cut{CUT}-*.onnx")))[-1]
    name = ort.InferenceSession(fp32).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.images = iter(calibration)

        def get_next(self) -> dict | None:
            x = next(self.images, None)
            return None if x is None else {name: x}

    with tempfile.TemporaryDirectory() as folder:
        prepared, quantized = f"{folder}/pre.onnx", f"{folder}/int8.onnx"
        quant_pre_process(fp32, prepared)
        quantize_static(prepared, quantized, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32"}
        runs = {"onnxruntime fp32": lambda x, s=ort.InferenceSession(fp32, options): s.run(None, {name: x})[0],
                "onnxruntime int8": lambda x, s=ort.InferenceSession(quantized, options): s.run(None, {name: x})[0],
                "openvino fp32": lambda x, m=core.compile_model(fp32, "CPU", config): m(x)[0],
                "openvino int8": lambda x, m=core.compile_model(quantized, "CPU", config): m(x)[0]}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(rounds):
            x = val[r % len(val)][0].numpy()
            for key, run in runs.items():
                started = time.process_time()
                run(x)
                times[key].append(time.process_time() - started)
        profile = CodecProfile.load(str(PROFILE))
        split = model.split(CUT)
        difference, coded = 0.0, {"fp32": [], "int8": []}
        for x, info in val:
            heads = {"fp32": runs["onnxruntime fp32"](x.numpy()), "int8": runs["onnxruntime int8"](x.numpy())}
            difference = max(difference, float(np.abs(heads["fp32"] - heads["int8"]).max()))
            for key, head in heads.items():
                decoded, _ = SequenceRoundtrip(profile)({f"layer{CUT}": head[0]})
                outputs = split.tail({k: torch.from_numpy(v[None]) for k, v in decoded.items()})
                coded[key].append(model.postprocess(outputs, info))
    changes = _changes(coded["fp32"], coded["int8"])
    rows = [[key, f"{1000 * np.median(v):.2f}"] for key, v in times.items()]
    return markdown(["head at cut 60", "CPU ms per call (median)"], rows) + (
        f"\n\nint8 against fp32: largest difference at the cut {difference:.2g} (the shipped profile's quantizer step is "
        f"4.05); through the codec, {int(changes.sum())} +- {block_se(changes, 1):.1f} detections lost + added on "
        f"{len(val)} val2017 images.")


def _run_cli(args: list[str]) -> tuple[str, float, float]:
    """Run `splitinfer ARGS`; (stdout, wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "splitinfer.cli", *args], capture_output=True, text=True,
                          check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done.stdout, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _per_item(args: list[str], flag: str, long: int, short: int) -> tuple[float, float, str]:
    """Wall and CPU seconds per item (frame or image) of `splitinfer ARGS FLAG N`: a run of `long` items less a run
    of `short`, so that start-up (imports, model load, warm-up) cancels out; and the long run's output."""
    out, wall_long, cpu_long = _run_cli([*args, flag, str(long)])
    _, wall_short, cpu_short = _run_cli([*args, flag, str(short)])
    return (wall_long - wall_short) / (long - short), (cpu_long - cpu_short) / (long - short), out


def demo(runtimes: list[str], runs: int, frames: int) -> str:
    results: dict[str, list[tuple[float, float, float]]] = {r: [] for r in runtimes}
    for runtime in runtimes:  # untimed: exports and kernels
        _run_cli(["demo", "--frames", "10", "--runtime", runtime])
    for n in range(runs):
        for runtime in runtimes[n % len(runtimes):] + runtimes[:n % len(runtimes)]:
            wall, cpu, out = _per_item(["demo", "--runtime", runtime], "--frames", frames, 20)
            fps = float(re.search(r"throughput\s+([\d.]+) frames/s", out).group(1))  # type: ignore[union-attr]
            results[runtime].append((fps, 1 / wall, 1000 * cpu))
    base = np.mean([fps for fps, _, _ in results["torch"]])
    cpu_base = np.mean([cpu for _, _, cpu in results["torch"]])
    rows = [[r, " / ".join(f"{fps:.1f}" for fps, _, _ in v), f"{np.mean([f for f, _, _ in v]) / base:.2f}",
             " / ".join(f"{cpu:.0f}" for _, _, cpu in v), f"{np.mean([c for _, _, c in v]) / cpu_base:.2f}"]
            for r, v in results.items()]
    return markdown(["runtime", "demo throughput, frames/s (each run)", "x torch",
                     "CPU ms per frame, edge + cloud (each run)", "x torch"], rows) + (
        f"\n\n(throughput as the demo prints it for {frames} frames; CPU per frame from a {frames}-frame run less a "
        f"20-frame run of the demo process; runtimes interleaved, {runs} runs each)")


def _eval_args(threads: int) -> list[str]:
    return ["eval", str(VAL), "--weights", str(WEIGHTS), "--codec", "default", "--no-progress", "--json",
            "--threads", str(threads)]


def load(threads_list: list[int]) -> str:
    rows = []
    for threads in threads_list:
        idle, _, _ = _per_item(_eval_args(threads), "--limit", 60, 10)
        competitor = subprocess.Popen(  # a second eval, again and again, for as long as the measurement runs
            ["bash", "-c", f"while true; do {sys.executable} -m splitinfer.cli {' '.join(_eval_args(threads))}; done"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(5)
            loaded, _, _ = _per_item(_eval_args(threads), "--limit", 60, 10)
        finally:
            os.killpg(competitor.pid, 15)
            competitor.wait()
        label = "default policy" if threads == 0 else f"{threads} threads"
        rows.append([label, f"{1 / idle:.1f}", f"{1 / loaded:.1f}", f"{loaded / idle:.2f}"])
    return markdown(["eval threads", "images/s alone", "images/s beside a second eval", "slow-down"], rows) + \
        ("\n\n(val2017 images through the whole split with the shipped profile; per image from a 60-image run "
         "less a 10-image run, so start-up cancels out)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="speed,agreement,fidelity,int8,demo,load",
                        help="comma-separated tables to print (speed, agreement, fidelity, int8, demo, load)")
    parser.add_argument("--rounds", type=int, default=40, help="speed rounds (one image each)")
    parser.add_argument("--images", type=int, default=20, help="val2017 images for speed and agreement")
    parser.add_argument("--video-frames", type=int, default=150)
    parser.add_argument("--demo-runs", type=int, default=3)
    parser.add_argument("--demo-frames", type=int, default=120)
    args = parser.parse_args()
    if not WEIGHTS.is_dir():
        print(f"needs the shared data at {DATA} (or SPLITINFER_SHARED_DATA)", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    import torch

    from splitinfer.runtimes import missing_packages

    torch.set_num_threads(1)
    if only & {"speed", "agreement", "fidelity"}:
        variants = load_variants()
        images = val_images(args.images)
        if "speed" in only:
            print(f"## CPU time per call, one thread ({args.rounds} rounds)\n\n{speed(variants, args.rounds, images)}\n",
                  flush=True)
        if "agreement" in only:
            print(f"## Agreement with eager torch\n\n{agreement(variants, images)}\n", flush=True)
        if "fidelity" in only:
            print(f"## Fidelity against eager torch\n\n{fidelity(variants, args.video_frames)}\n", flush=True)
    if "int8" in only:
        print(f"## int8 head\n\n{int8(args.rounds)}\n", flush=True)
    if "demo" in only:
        runtimes = ["torch"] + [r for r in ("onnxruntime", "openvino") if not missing_packages(r)]
        print(f"## splitinfer demo\n\n{demo(runtimes, args.demo_runs, args.demo_frames)}\n", flush=True)
    if "load" in only:
        print(f"## eval under load\n\n{load([0, 2])}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
