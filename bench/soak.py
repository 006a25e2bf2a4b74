"""Soak: N streams of pre-coded frames against one cloud for M minutes; is memory, task, fd and latency use flat?

An in-process cloud (the real model, default settings but the ones given) serves N Infer streams on
loopback gRPC. Each stream sends real frames (the first --frames frames of the shared video, coded once
by the real edge pipeline at cut 80 with the shipped profile; no edge heads run during the soak) at
--rate frames/s, one at a time (the next frame leaves when its result arrived or its tick came, whichever
is later), with increasing frame ids and fresh capture times. Every --sample seconds the script samples
the process (cloud + the N small clients, which hold a constant few buffers): resident memory
(/proc/self/status VmRSS), open asyncio tasks, open file descriptors, threads, the cloud's open stream
slots, and the latency of the frames answered in that interval (frame sent -> result received, p50 and
p99). It prints one row per sample, then the drift: RSS, tasks and fds of the last sample minus the first
after warm-up, and the RSS slope (least squares, MB/min) over those samples.

    python bench/soak.py                                   # 4 streams x 2 minutes
    python bench/soak.py --streams 8 --minutes 10 --rate 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import grpc

from splitinfer.dnn import load_model
from splitinfer.sample_data import shared_data_dir
from splitinfer.channel_options import channel_options
from splitinfer.services.cloud.engine import TailEngine
from splitinfer.services.cloud.server import CloudConfig, CloudServer
from splitinfer.services.edge.capture import FrameGrabber
from splitinfer.services.edge.pipeline import EdgePipeline
from splitinfer.services.profiles import CodecSettings, resolve_profile
from splitinfer.v1 import inference_pb2, inference_pb2_grpc

_SHARED = shared_data_dir()
VIDEO = _SHARED / "video" / "one-by-one-person-detection.mp4"
CUT = "80"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def coded_frames(model, count: int) -> list[inference_pb2.FeatureFrame]:
    """The first `count` frames of the shared video through the real edge pipeline (cut 80, shipped profile)."""
    pipeline = EdgePipeline(model, resolve_profile(model, CUT, CodecSettings()))
    with FrameGrabber(str(VIDEO), max_frames=count) as grabber:
        return [pipeline.encode(pipeline.run_head(frame)) for frame in grabber.frames()]


class Stream:
    """One paced stream: sends frames at `rate` per second (one in flight), records each frame's latency."""

    def __init__(self, stub, stream_id: str, frames: list, rate: float, latencies: list[float]) -> None:
        self.stub, self.stream_id, self.frames, self.period = stub, stream_id, frames, 1.0 / rate
        self.latencies = latencies
        self.errors = 0
        self.answered = 0

    async def run(self, stop: asyncio.Event) -> None:
        call = self.stub.Infer()
        await call.write(inference_pb2.InferRequest(start=inference_pb2.StreamStart(
            stream_id=self.stream_id, model="yolo-fastest-1.1-xl", cut=CUT)))
        accepted = await call.read()
        assert accepted.WhichOneof("kind") == "accepted", accepted
        frame_id = 0
        next_tick = time.monotonic()
        while not stop.is_set():
            frame = inference_pb2.FeatureFrame()
            frame.CopyFrom(self.frames[frame_id % len(self.frames)])
            frame.frame_id = frame_id
            frame.capture.capture_time.FromNanoseconds(time.time_ns())
            sent = time.perf_counter()
            await call.write(inference_pb2.InferRequest(frame=frame))
            response = await call.read()
            self.latencies.append(time.perf_counter() - sent)
            self.answered += 1
            self.errors += response.result.HasField("error")
            frame_id += 1
            next_tick = max(next_tick + self.period, time.monotonic())
            await asyncio.sleep(next_tick - time.monotonic())
        await call.done_writing()
        await call.code()


async def soak(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    model = load_model(args.model, weights=args.weights)
    frames = coded_frames(model, args.frames)
    config = CloudConfig(model=model.name, host="127.0.0.1", port=0, metrics_port=-1, plaintext=True, workers=args.workers,
                         max_streams=max(16, args.streams))
    server = CloudServer(config, engine=TailEngine(model))
    await server.start()
    stop = asyncio.Event()
    latencies: list[float] = []
    rows = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            streams = [Stream(stub, f"soak-{i}", frames, args.rate, latencies) for i in range(args.streams)]
            tasks = [asyncio.create_task(s.run(stop)) for s in streams]
            started = time.monotonic()
            print(f"soak: {args.streams} streams x {args.minutes:g} min at {args.rate:g} frames/s each, "
                  f"{len(frames)} pre-coded frames of {sum(len(t.payload) for t in frames[0].tensors)} payload "
                  f"bytes, torch threads {args.threads}, cloud workers {args.workers}", flush=True)
            header = ("| t (s) | RSS (MB) | asyncio tasks | fds | threads | open streams | frames | p50 ms | p99 ms |\n"
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            print(header, flush=True)
            while time.monotonic() - started < args.minutes * 60:
                await asyncio.sleep(args.sample)
                for task in tasks:
                    if task.done():
                        task.result()  # a stream that ended early is a failure of the soak: say why
                window, latencies[:] = list(latencies), []
                row = (time.monotonic() - started, rss_mb(), len(asyncio.all_tasks()), open_fds(),
                       threading.active_count(), server.registry.open_streams, len(window),
                       1000 * pct(window, 0.5), 1000 * pct(window, 0.99))
                rows.append((row, window))
                print("| {:.0f} | {:.0f} | {} | {} | {} | {} | {} | {:.1f} | {:.1f} |".format(*row), flush=True)
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        await server.stop(grace=0)
    steady = [r for r, _ in rows if r[0] >= args.warm_up] or [r for r, _ in rows]
    every = [x for _, w in rows for x in w]
    slope = statistics.linear_regression([r[0] / 60 for r in steady], [r[1] for r in steady]).slope \
        if len(steady) >= 2 else float("nan")
    answered = sum(s.answered for s in streams)
    print(f"\nafter {args.warm_up:g} s of warm-up: RSS {steady[0][1]:.0f} -> {steady[-1][1]:.0f} MB "
          f"(slope {slope:+.1f} MB/min), asyncio tasks {steady[0][2]} -> {steady[-1][2]}, fds {steady[0][3]} -> "
          f"{steady[-1][3]}; {answered} frames answered ({sum(s.errors for s in streams)} in-band errors), "
          f"latency p50 {1000 * pct(every, 0.5):.1f} ms, p99 {1000 * pct(every, 0.99):.1f} ms; "
          f"open stream slots after the streams closed: {server.registry.open_streams}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=5.0, help="frames per second per stream")
    parser.add_argument("--frames", type=int, default=20, help="distinct pre-coded frames, sent round-robin")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warm-up", type=float, default=30.0, help="seconds left out of the drift figures")
    parser.add_argument("--workers", type=int, default=2, help="cloud executor threads")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--model", default="yolo-fastest-1.1-xl")
    parser.add_argument("--weights", default=str(_SHARED / "models" / "yolo-fastest-1.1"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(soak(parse_args())))
