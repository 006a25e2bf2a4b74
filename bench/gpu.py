"""The cloud on a GPU (or the CPU): frames/s and p50/p95 latency per model, precision and batch size.

One short, self-contained run. For each model (Yolo-Fastest-1.1-XL at its default cut with the real
weights; YOLOv3 at cut 12 with random weights, which is fine for speed) it pre-codes a few video frames
with the real edge pipeline (or reads them from --frames-dir), starts a cloud in this process on the
device in each precision, and replays the frames from N concurrent streams with the load generator
(bench/loadgen.py) in separate client processes, so the clients do not share the cloud's interpreter.
The batch size is changed between measurements on the same cloud (its batcher's max_batch).

    python bench/gpu.py --device cuda --streams 64                            # the GPU run (< 8 minutes)
    python bench/gpu.py --device cpu --streams 8 --plan cpu --duration 20     # the CPU figures beside it

Random YOLOv3 weights would put nearly every anchor near the 0.25 score threshold and make NMS, not
the tail, the work measured; their YOLO output convolutions are damped (objectness bias -8) so that,
as with trained weights, few boxes survive the threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import LoadReport, precode, read_frames, write_frames  # noqa: E402

MODELS = {
    # name: (registry model, cut, real weights?)
    "fastest": ("yolo-fastest-1.1-xl", None, True),
    "yolov3": ("yolov3", "12", False),
}
# (model, precision) -> (max batch, frames/s per stream) measured; rate 0 is closed loop (as fast as the window
# allows: the throughput), a rate > 0 offers that load open loop (the latency at a given load).
# "gpu" is the H200 run, "cpu" the figures beside it, "smoke" a quick check of the script.
PLANS = {
    "gpu": {("fastest", "fp32"): [(1, 0), (16, 0), (64, 0), (64, 16)], ("fastest", "fp16"): [(16, 0), (64, 0), (64, 16)],
            ("fastest", "bf16"): [(64, 0)],
            ("yolov3", "fp32"): [(1, 0), (16, 0)], ("yolov3", "fp16"): [(16, 0), (32, 0), (32, 5)],
            ("yolov3", "bf16"): [(32, 0)]},
    "cpu": {("fastest", "fp32"): [(1, 0), (8, 0)], ("yolov3", "fp32"): [(1, 0), (4, 0)]},
    "smoke": {("fastest", "fp32"): [(1, 0), (4, 0), (4, 5)]},
}


def damp_random_heads(model) -> None:
    """Random weights: make the YOLO output convolutions small, objectness low (see the module docstring)."""
    import torch
    from torch import nn

    with torch.no_grad():
        for head in model.network.yolo_heads:
            conv = next(m for m in model.network.layers[head.layer - 1].modules() if isinstance(m, nn.Conv2d))
            conv.weight.mul_(0.01)
            conv.bias.view(len(head.anchors), head.classes + 5)[:, 4] = -8.0


def frames_for(key: str, frames_dir: Path, count: int, video: Path, weights: str) -> Path:
    """The pre-coded frames of a model (coded here once if the file is not there yet)."""
    from splitinfer.v1 import inference_pb2

    name, cut, real = MODELS[key]
    path = frames_dir / f"{key}.frames"
    if not path.exists():
        frames = precode(name, video, count, weights=weights if real else None, cut=cut, pretrained=real)
        write_frames(path, inference_pb2.StreamStart(model=name, cut=cut or ""), frames)
    return path


async def load(address: str, frames_file: Path, streams: int, clients: int, *, window: int, warmup: float,
               duration: float, rate: float) -> LoadReport:
    """Replay from `clients` processes sharing `streams` streams; one merged report."""
    shares = [streams // clients + (1 if i < streams % clients else 0) for i in range(clients)]
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve().parent / "loadgen.py"), "--cloud", address, "--frames-file",
        str(frames_file), "--streams", str(n), "--window", str(window), "--warmup", str(warmup), "--duration",
        str(duration), "--rate", str(rate), "--stream-prefix", f"c{i}", "--json", stdout=asyncio.subprocess.PIPE)
        for i, n in enumerate(shares) if n]
    report = LoadReport(streams, duration)
    for proc in procs:
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a load client failed ({proc.returncode})")
        part = json.loads(out)
        report.latencies += part["latencies"]
        report.errors += part["errors"]
        report.first_errors += part["first_errors"]
        for stage, seconds in part["stage_totals"].items():
            report.stage_totals[stage] = report.stage_totals.get(stage, 0.0) + seconds
    return report


async def measure_model(key: str, plan: dict, args: argparse.Namespace, frames_file: Path, weights: str) -> list[str]:
    from splitinfer.codec import warm_up
    from splitinfer.dnn import load_model
    from splitinfer.services.cloud.engine import TailEngine
    from splitinfer.services.cloud.server import CloudConfig, CloudServer

    name, _, real = MODELS[key]
    warm_up()  # the codec's kernels (numba), before any cloud serves
    rows = []
    for (model_key, precision), batches in plan.items():
        if model_key != key:
            continue
        started = time.perf_counter()
        model = load_model(name, weights=weights if real else None, pretrained=real)
        if not real:
            damp_random_heads(model)
        engine = TailEngine(model, device=args.device, precision=precision)
        largest = max(batch for batch, _ in batches)
        server = CloudServer(CloudConfig(model=name, host="127.0.0.1", port=0, metrics_port=-1, plaintext=True,
                                         max_streams=args.streams, workers=args.workers, max_batch=largest,
                                         max_batch_delay_ms=args.delay_ms), engine=engine)
        await server.start()
        ready = time.perf_counter() - started
        try:
            for batch, rate in batches:
                server.batcher.max_batch = batch
                before = (server.batcher.batches, server.batcher.frames)
                report = await load(f"127.0.0.1:{server.port}", frames_file, args.streams, args.clients,
                                    window=args.window if not rate else max(args.window, 4), warmup=args.warmup,
                                    duration=args.duration, rate=rate)
                batched = server.batcher.frames - before[1]
                mean_batch = batched / max(1, server.batcher.batches - before[0])
                offered = f"{rate * args.streams:.0f}" if rate else "closed loop"
                row = (f"| {name} | {engine.device} | {precision} | {batch} | {args.streams} | {offered} | "
                       f"{report.frames_per_second:.1f} | {1000 * report.percentile(50):.1f} | "
                       f"{1000 * report.percentile(95):.1f} | {mean_batch:.1f} | {report.errors} | "
                       + " / ".join(f"{report.stage_ms(s):.1f}" for s in ("queue", "decode", "tail", "postprocess"))
                       + " |")
                print(row, flush=True)
                for line in report.first_errors[:2]:
                    print(f"  error: {line}", flush=True)
                rows.append(row)
        finally:
            await server.stop(grace=0)
        print(f"  ({name} {precision}: model load + warm-up + start {ready:.1f} s)", flush=True)
        del engine, model, server
    return rows


def main() -> int:
    from splitinfer.sample_data import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--plan", default=None, choices=sorted(PLANS), help="which measurements (default: gpu on a "
                        "GPU, cpu on the CPU)")
    parser.add_argument("--models", default="fastest,yolov3")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes")
    parser.add_argument("--window", type=int, default=2, help="frames in flight per stream")
    parser.add_argument("--workers", type=int, default=4, help="cloud executor threads (= batches in flight)")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="--max-batch-delay-ms of the cloud")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--frames", type=int, default=30, help="video frames to pre-code per model")
    parser.add_argument("--frames-dir", default=None, help="pre-coded frames (written here when absent)")
    parser.add_argument("--torch-threads", type=int, default=0)
    args = parser.parse_args()
    import torch

    from splitinfer.dnn.device import resolve_device

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = resolve_device(args.device)
    args.device = str(device)
    plan = PLANS[args.plan or ("gpu" if device.type == "cuda" else "cpu")]
    data = shared_data_dir()
    weights = str(data / "models" / "yolo-fastest-1.1")
    frames_dir = Path(args.frames_dir or os.environ.get("TMPDIR", "/tmp"))
    frames_dir.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores visible)"
    print(f"device {device}: {name}; torch {torch.__version__}; {args.streams} streams from {args.clients} client "
          f"processes, window {args.window}, cloud workers {args.workers}, max-batch-delay {args.delay_ms} ms; "
          f"{args.duration:.0f} s measured after {args.warmup:.0f} s", flush=True)
    print("| model | device | precision | max batch | streams | offered frames/s | frames/s | p50 ms | p95 ms | mean batch "
          "| errors | cloud ms per frame: queue / decode / tail / postprocess |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for key in args.models.split(","):
        frames_file = frames_for(key, frames_dir, args.frames, data / "video" / "one-by-one-person-detection.mp4",
                                 weights)
        start, frames = read_frames(frames_file)
        print(f"  ({key}: {len(frames)} pre-coded frames, {np.mean([len(f.SerializeToString()) for f in frames]):.0f} "
              f"B/frame, cut {start.cut or 'default'})", flush=True)
        asyncio.run(measure_model(key, plan, args, frames_file, weights))
    return 0


if __name__ == "__main__":
    sys.exit(main())
