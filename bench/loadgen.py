"""Load generator for the cloud: replay pre-coded FeatureFrames from N concurrent streams (like perf_analyzer).

The edge's work (capture, head, encode) is done once, up front (`precode`), so the cloud is measured
without edge heads competing for the same cores. Each stream is its own gRPC channel and Infer call,
replays the coded sequence in a loop (frame ids and temporal references shifted per loop, the loop
starting on an intra frame), keeps at most `window` frames in flight and, with `rate` > 0, sends at
that many frames/s (open loop, as a camera would; 0: as fast as the window allows). Latency is from a
frame's send to its result.

    # pre-code 60 video frames, then compare batch 1 with batching on a cloud subprocess per setting
    python bench/loadgen.py --streams 8 --frames 60 --duration 20 --compare-batches 1,8

Prints a Markdown table: frames/s, p50/p95 latency, frame errors, mean batch size where known, and the
cloud process's CPU seconds per frame.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from splitinfer.channel_options import channel_options
from splitinfer.v1 import inference_pb2, inference_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
_LENGTH = struct.Struct("<I")


# -- pre-coding ------------------------------------------------------------------------------------
def precode(model: str, video: str | os.PathLike, count: int, *, weights: str | None = None, cut: str | None = None,
            levels: int | None = None, pretrained: bool = True, intra_period: int | None = None
            ) -> list[inference_pb2.FeatureFrame]:
    """Run the real edge pipeline (head + codec) on the first `count` frames of a video; the first is intra."""
    import cv2

    from splitinfer.dnn import load_model
    from splitinfer.services.edge.app import EdgeSettings, build_pipeline
    from splitinfer.services.edge.capture import CapturedFrame

    net = load_model(model, weights=weights, pretrained=pretrained)
    settings = EdgeSettings(source=str(video), model=model, weights=weights, cut=cut, levels=levels,
                            intra_period=intra_period)
    pipeline = build_pipeline(settings, net)
    capture = cv2.VideoCapture(str(video))
    frames: list[inference_pb2.FeatureFrame] = []
    try:
        while len(frames) < count:
            ok, image = capture.read()
            if not ok:
                if not frames:
                    raise SystemExit(f"could not read a frame from {video}")
                break
            head = pipeline.run_head(CapturedFrame(len(frames), image, time.time_ns(), time.monotonic_ns()))
            frames.append(pipeline.encode(head))
    finally:
        capture.release()
    return frames


def write_frames(path: str | os.PathLike, start: inference_pb2.StreamStart,
                 frames: Sequence[inference_pb2.FeatureFrame]) -> None:
    """Save a stream start and its coded frames (length-prefixed protobuf messages)."""
    with open(path, "wb") as out:
        for message in (start, *frames):
            data = message.SerializeToString()
            out.write(_LENGTH.pack(len(data)) + data)


def read_frames(path: str | os.PathLike) -> tuple[inference_pb2.StreamStart, list[inference_pb2.FeatureFrame]]:
    """Load what write_frames saved."""
    data = Path(path).read_bytes()
    messages, offset = [], 0
    while offset < len(data):
        (size,) = _LENGTH.unpack_from(data, offset)
        messages.append(data[offset + 4:offset + 4 + size])
        offset += 4 + size
    start = inference_pb2.StreamStart.FromString(messages[0])
    return start, [inference_pb2.FeatureFrame.FromString(m) for m in messages[1:]]


# -- replay ----------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What one replay measured (latencies of the frames answered inside the measuring window)."""

    streams: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    stage_totals: dict[str, float] = field(default_factory=dict)  # cloud stage seconds summed over answered frames

    def stage_ms(self, stage: str) -> float:
        """Mean cloud-side time of a stage (decode, tail, postprocess, queue) per answered frame, in ms."""
        return 1000 * self.stage_totals.get(stage, 0.0) / len(self.latencies) if self.latencies else float("nan")

    @property
    def frames_per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


def _shifted(frame: inference_pb2.FeatureFrame, offset: int) -> inference_pb2.FeatureFrame:
    copy = inference_pb2.FeatureFrame()
    copy.CopyFrom(frame)
    copy.frame_id = frame.frame_id + offset
    if frame.HasField("reference_frame_id"):
        copy.reference_frame_id = frame.reference_frame_id + offset
    copy.capture.capture_time.FromNanoseconds(time.time_ns())
    copy.capture.capture_monotonic_ns = time.monotonic_ns()
    return copy


async def _one_stream(address: str, stream_id: str, start: inference_pb2.StreamStart,
                      frames: Sequence[inference_pb2.FeatureFrame], *, rate: float, window: int, warmup_s: float,
                      measure_s: float, report: LoadReport, t0: float) -> None:
    period = len(frames) and frames[-1].frame_id + 1
    sent: dict[int, float] = {}
    slots = asyncio.Semaphore(window)
    measure_from, measure_to = t0 + warmup_s, t0 + warmup_s + measure_s
    async with grpc.aio.insecure_channel(address, options=channel_options()) as channel:
        call = inference_pb2_grpc.InferenceServiceStub(channel).Infer()
        opening = inference_pb2.StreamStart()
        opening.CopyFrom(start)
        opening.stream_id = stream_id
        await call.write(inference_pb2.InferRequest(start=opening))
        accepted = await call.read()
        if accepted is grpc.aio.EOF or accepted.WhichOneof("kind") != "accepted":
            raise SystemExit(f"stream {stream_id} was not accepted: {accepted}")

        async def receive() -> None:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return
                now = time.perf_counter()
                result = response.result
                began = sent.pop(result.frame_id, None)
                slots.release()
                if began is None or not (measure_from <= began and now <= measure_to):
                    continue
                if result.HasField("error"):
                    report.errors += 1
                    if len(report.first_errors) < 3:
                        report.first_errors.append(f"{stream_id}/{result.frame_id}: {result.error.message}")
                else:
                    report.latencies.append(now - began)
                    for stage in ("decode", "tail", "postprocess", "queue"):
                        report.stage_totals[stage] = report.stage_totals.get(stage, 0.0) + result.stage_seconds[stage]

        receiver = asyncio.create_task(receive())
        try:
            n = 0
            # Cameras are not in step: each stream starts at a random phase of its frame period.
            next_send = time.perf_counter() + (random.uniform(0, 1 / rate) if rate > 0 else 0.0)
            while time.perf_counter() < measure_to:
                if rate > 0:
                    await asyncio.sleep(max(0.0, next_send - time.perf_counter()))
                    next_send += 1.0 / rate
                await slots.acquire()
                loop_index, position = divmod(n, len(frames))
                frame = _shifted(frames[position], loop_index * period)
                sent[frame.frame_id] = time.perf_counter()
                await call.write(inference_pb2.InferRequest(frame=frame))
                n += 1
            await call.done_writing()
            await asyncio.wait_for(receiver, 60)
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)


async def replay(address: str, start: inference_pb2.StreamStart, frames: Sequence[inference_pb2.FeatureFrame], *,
                 streams: int, rate: float = 0.0, window: int = 4, warmup_s: float = 3.0, measure_s: float = 10.0,
                 stream_prefix: str = "load") -> LoadReport:
    """Replay `frames` on `streams` concurrent Infer calls; frames answered in the measuring window count."""
    report = LoadReport(streams, measure_s)
    t0 = time.perf_counter()
    await asyncio.gather(*(
        _one_stream(address, f"{stream_prefix}-{i}", start, frames, rate=rate, window=window, warmup_s=warmup_s,
                    measure_s=measure_s, report=report, t0=t0)
        for i in range(streams)))
    return report


# -- a cloud subprocess per setting ----------------------------------------------------------------
class CloudProcess:
    """`splitinfer cloud` on a free port; CPU seconds read from /proc."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port_file = log.with_suffix(".port")
        self.port_file.unlink(missing_ok=True)
        self.log = log
        command = [sys.executable, "-m", "splitinfer.cli", "cloud", "--host", "127.0.0.1", "--port", "0",
                   "--plaintext", "--metrics-port", "-1", "--port-file", str(self.port_file), "--log-level", "WARNING", *args]
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})

    def wait(self, timeout: float = 300.0) -> str:
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the cloud did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        return f"127.0.0.1:{self.port_file.read_text().strip()}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


def measure(cloud_args: Sequence[str], start: inference_pb2.StreamStart, frames: Sequence[inference_pb2.FeatureFrame],
            *, streams: int, rate: float, window: int, warmup_s: float, measure_s: float, log: Path,
            env: dict[str, str] | None = None) -> tuple[LoadReport, float]:
    """Start a cloud with `cloud_args`, replay against it; (report, cloud CPU seconds per answered frame)."""
    cloud = CloudProcess(cloud_args, log, env)
    try:
        address = cloud.wait()
        before = [0.0]

        async def run() -> LoadReport:
            async def mark() -> None:
                await asyncio.sleep(warmup_s)
                before[0] = cloud.cpu_seconds()

            marker = asyncio.create_task(mark())
            report = await replay(address, start, frames, streams=streams, rate=rate, window=window,
                                  warmup_s=warmup_s, measure_s=measure_s)
            await marker
            return report

        report = asyncio.run(run())
        # CPU over the measuring window (plus the drain of the last frames: a slight overestimate).
        cpu = cloud.cpu_seconds() - before[0]
    finally:
        cloud.stop()
    answered = len(report.latencies) + report.errors
    return report, cpu / answered if answered else float("nan")


def table_row(label: str, report: LoadReport, cpu_per_frame: float) -> str:
    return (f"| {label} | {report.streams} | {report.frames_per_second:.1f} | {1000 * report.percentile(50):.1f} | "
            f"{1000 * report.percentile(95):.1f} | {report.errors} | {1000 * cpu_per_frame:.2f} |")


TABLE_HEADER = ("| setting | streams | frames/s | p50 ms | p95 ms | frame errors | cloud CPU ms/frame |\n"
                "|---|---|---|---|---|---|---|")


def main(argv: Sequence[str] | None = None) -> int:
    from splitinfer.sample_data import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolo-fastest-1.1-xl")
    parser.add_argument("--weights", help="weights folder (default: ../shared/data/models/yolo-fastest-1.1)")
    parser.add_argument("--cut", help="cut (default: the model's default)")
    parser.add_argument("--video", help="video to pre-code (default: the shared sample video)")
    parser.add_argument("--frames", type=int, default=60, help="frames to pre-code and replay in a loop")
    parser.add_argument("--frames-file", help="read pre-coded frames from this file (or write them there once)")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rate", type=float, default=0.0, help="frames/s per stream (0: as fast as the window allows)")
    parser.add_argument("--window", type=int, default=2, help="frames in flight per stream")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--compare-batches", default="1,8", help="--max-batch values, one cloud each")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the settings this many times")
    parser.add_argument("--cloud-args", default="", help="more `splitinfer cloud` flags, e.g. '--workers 1'")
    parser.add_argument("--cloud", help="replay against this running cloud (HOST:PORT) instead of starting clouds")
    parser.add_argument("--stream-prefix", default="load", help="stream ids are PREFIX-0, PREFIX-1, ...")
    parser.add_argument("--json", action="store_true", help="with --cloud: print one JSON object (latencies, errors)")
    args = parser.parse_args(argv)
    if args.cloud:
        if not args.frames_file:
            parser.error("--cloud needs --frames-file (frames pre-coded by an earlier run)")
        start, frames = read_frames(args.frames_file)
        report = asyncio.run(replay(args.cloud, start, frames, streams=args.streams, rate=args.rate,
                                    window=args.window, warmup_s=args.warmup, measure_s=args.duration,
                                    stream_prefix=args.stream_prefix))
        if args.json:
            print(json.dumps({"streams": report.streams, "seconds": report.seconds, "latencies": report.latencies,
                              "errors": report.errors, "first_errors": report.first_errors,
                              "stage_totals": report.stage_totals}))
        else:
            print(TABLE_HEADER)
            print(table_row(args.cloud, report, float("nan")))
        return 0
    data = shared_data_dir()
    weights = args.weights or str(data / "models" / "yolo-fastest-1.1")
    if args.frames_file and Path(args.frames_file).exists():
        start, frames = read_frames(args.frames_file)
    else:
        frames = precode(args.model, args.video or data / "video" / "one-by-one-person-detection.mp4", args.frames,
                         weights=weights, cut=args.cut)
        start = inference_pb2.StreamStart(model=args.model, cut=args.cut or "")
        if args.frames_file:
            write_frames(args.frames_file, start, frames)
    sizes = [len(f.SerializeToString()) for f in frames]
    print(f"{len(frames)} pre-coded frames of {args.model}, {statistics.mean(sizes):.0f} B/frame on average; "
          f"{args.streams} streams, window {args.window}, rate {args.rate or 'open'}, {args.duration:.0f} s measured "
          f"after {args.warmup:.0f} s")
    print(TABLE_HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for batch in [int(b) for b in args.compare_batches.split(",")]:
                cloud_args = ["--model", args.model, "--weights", weights, "--max-batch", str(batch),
                              *args.cloud_args.split()]
                report, cpu = measure(cloud_args, start, frames, streams=args.streams, rate=args.rate,
                                      window=args.window, warmup_s=args.warmup, measure_s=args.duration,
                                      log=Path(tmp) / f"cloud-{repeat}-{batch}.log")
                print(table_row(f"max-batch {batch}" + (f" (run {repeat + 1})" if args.repeats > 1 else ""), report,
                                cpu), flush=True)
                for line in report.first_errors:
                    print(f"  error: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
