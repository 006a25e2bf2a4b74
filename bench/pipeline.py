"""The whole split pipeline over loopback gRPC, and the same frames sent as JPEG to a whole-model cloud.

Part 1 (streams): 1, 2, 4, 8 concurrent edge streams (file mode, every frame) against one in-process
cloud: per-frame latency p50/p95 (from the start of the frame's preprocessing to its result, i.e. without
the time the frame waited for a window slot), frames/s over all streams, bytes per frame and kbit/s at
the source's 10 frames/s, and the share of each stage: capture (OpenCV read + decode), head (preprocess +
head), encode, network (result received - frame sent - cloud stages: gRPC, serialization and queueing),
queue (waiting in the cloud's stream queue), decode, tail, NMS (box decoding + NMS). Frames: every
--stride-th frame of the shared video, written once to a lossless FFV1 clip that every stream reads.

Part 2 (baseline): one stream per configuration over the same frames, window 1 (no queueing): split
configurations (cut:levels with the edge's built-in clip ranges, or cut:PROFILE.json) and JPEG at each
--jpeg quality (of the source frame, and of the frame resized to the network input), over a bytes-in gRPC stream to an in-process cloud that runs the whole model. Fidelity counts
detections lost + added against the unsplit model run locally on the same frames (IoU >= 0.5, same
class). Overhead = (encode + decode + network) / (head + tail) for split, (JPEG encode + JPEG decode +
network) / (whole model) for JPEG. Every byte count is the real payload.

    python bench/pipeline.py --weights ../shared/data/models/yolo-fastest-1.1
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import grpc
import numpy as np

from splitinfer.channel_security import ChannelSecurity
from splitinfer.dnn import load_model
from splitinfer.channel_options import channel_options, server_options
from splitinfer.services.cloud.engine import TailEngine
from splitinfer.services.cloud.server import CloudConfig, CloudServer
from splitinfer.services.edge.app import EdgeSettings, run_edge
from splitinfer.services.edge.capture import FrameGrabber
from splitinfer.services.edge.client import FrameOutcome
from splitinfer.services.edge.pipeline import EdgePipeline
from splitinfer.services.profiles import CodecSettings, packaged_profile, resolve_profile
from splitinfer.sample_data import shared_data_dir
from splitinfer.services.fidelity import Fidelity, compare
from splitinfer.v1 import inference_pb2

_SHARED = shared_data_dir()
VIDEO = _SHARED / "video" / "one-by-one-person-detection.mp4"
SOURCE_FPS = 10.0
STAGES = ("capture", "head", "encode", "network", "queue", "decode", "tail", "nms")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class Run:
    """Per-frame figures of one configuration."""

    latencies: list[float] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    detections: dict[tuple[str, int], list] = field(default_factory=dict)
    frames: int = 0
    elapsed: float = 0.0

    def add(self, stage_seconds: dict[str, float], sent_ns: int, received_ns: int, payload: int, key, dets) -> None:
        edge_work = sum(stage_seconds.get(s, 0.0) for s in ("preprocess", "head", "encode"))
        cloud_work = sum(stage_seconds.get(s, 0.0) for s in ("queue", "decode", "tail", "postprocess"))
        round_trip = (received_ns - sent_ns) / 1e9
        self.latencies.append(edge_work + round_trip)
        self.bytes.append(payload)
        self.stages["capture"] += stage_seconds.get("capture", 0.0)
        self.stages["head"] += stage_seconds.get("preprocess", 0.0) + stage_seconds.get("head", 0.0)
        self.stages["encode"] += stage_seconds.get("encode", 0.0)
        self.stages["network"] += max(0.0, round_trip - cloud_work)
        self.stages["queue"] += stage_seconds.get("queue", 0.0)
        self.stages["decode"] += stage_seconds.get("decode", 0.0)
        self.stages["tail"] += stage_seconds.get("tail", 0.0)
        self.stages["nms"] += stage_seconds.get("postprocess", 0.0)
        self.detections[key] = dets
        self.frames += 1

    def merge(self, other: Run) -> None:
        self.latencies += other.latencies
        self.bytes += other.bytes
        for stage, seconds in other.stages.items():
            self.stages[stage] += seconds
        self.detections.update({(key[0], key[1], len(self.detections)): dets for key, dets in other.detections.items()})
        self.frames += other.frames
        self.elapsed += other.elapsed

    def overhead(self) -> float:
        s = self.stages
        return (s["encode"] + s["decode"] + s["network"]) / max(s["head"] + s["tail"], 1e-9)


def read_frames(count: int, stride: int) -> list[np.ndarray]:
    """Every `stride`-th frame of the shared video, `count` of them."""
    with FrameGrabber(str(VIDEO), max_frames=count * stride) as grabber:
        return [frame.image for frame in grabber.frames() if frame.sequence % stride == 0]


def write_clip(frames: list[np.ndarray], path: Path) -> Path:
    """The chosen frames as a lossless (FFV1) video that every edge stream reads like a camera file."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), SOURCE_FPS, (width, height))
    if not writer.isOpened():
        raise SystemExit("this OpenCV build cannot write FFV1 video; run with --stride 1")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def split_choice(spec: str, model_name: str) -> tuple[str, CodecSettings, str]:
    """'80:6' (cut 80, 6 levels, the model's shipped clip ranges), '80:16:-20:24' (levels and clip range),
    '80:path/profile.json', or '80:shipped' (the codec profile shipped with the model)."""
    cut, _, rest = spec.partition(":")
    if rest == "shipped":
        path = packaged_profile(model_name)
        if path is None:
            raise SystemExit(f"{model_name} ships no codec profile; name a profile file instead of 'shipped'.")
        return cut, CodecSettings(profile=str(path)), f"split cut {cut}, shipped profile {path.name}"
    if rest.endswith(".json"):
        return cut, CodecSettings(profile=rest), f"split cut {cut}, profile {Path(rest).name}"
    levels, *clip = rest.split(":") if rest else ["4"]
    if clip:
        low, high = float(clip[0]), float(clip[1])
        return (cut, CodecSettings(levels=int(levels), clip_min=low, clip_max=high),
                f"split cut {cut}, {levels} levels [{low:g}, {high:g}]")
    return cut, CodecSettings(levels=int(levels)), f"split cut {cut}, {levels} levels (shipped ranges)"


async def run_split_streams(model, engine, clip: Path, cut: str, choice: CodecSettings, streams: int,
                            frames: int, window: int) -> Run:
    run = Run()

    def sink(outcome: FrameOutcome) -> None:
        r = outcome.result
        run.add(dict(r.stage_seconds), outcome.sent_monotonic_ns, outcome.received_monotonic_ns, r.payload_bytes,
                (r.stream_id, r.frame_id), list(r.detections))

    server = CloudServer(CloudConfig(model=model.name, host="127.0.0.1", port=0, metrics_port=-1, plaintext=True,
                                     max_streams=max(16, streams), workers=2), engine=engine)
    await server.start()
    try:
        pipelines = []
        for _ in range(streams):
            pipeline = EdgePipeline(model, resolve_profile(model, cut, choice), percentile_levels=choice.levels or 8)
            pipeline.warm_up()  # load the codec's kernels and run the head once before timing
            pipelines.append(pipeline)
        started = time.monotonic()
        await asyncio.gather(*(
            run_edge(EdgeSettings(security=ChannelSecurity(plaintext=True), source=str(clip), cloud=f"127.0.0.1:{server.port}", stream_id=f"bench-{i}",
                                  model=model.name, frames=frames, window=window, mode="file"),
                     [sink], pipeline=pipelines[i])
            for i in range(streams)))
        run.elapsed = time.monotonic() - started
    finally:
        await server.stop(grace=0)
    return run


# -- JPEG baseline: bytes in, InferenceResult out, whole model in the cloud ----------------------------
_JPEG_METHOD = "/bench.JpegInference/Infer"
_HEADER = struct.Struct("<QII")  # frame id, source width, source height


def jpeg_handler(model, executor):
    async def infer(request_iterator, context):
        loop = asyncio.get_running_loop()
        async for request in request_iterator:
            frame_id, width, height = _HEADER.unpack_from(request)
            result = await loop.run_in_executor(executor, _jpeg_infer, model, request[_HEADER.size:], frame_id,
                                                width, height)
            yield result.SerializeToString()

    return grpc.method_handlers_generic_handler(
        "bench.JpegInference", {"Infer": grpc.stream_stream_rpc_method_handler(infer)})


def _jpeg_infer(model, data: bytes, frame_id: int, width: int, height: int) -> inference_pb2.InferenceResult:
    started = time.perf_counter()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image.shape[1] != width or image.shape[0] != height:
        image = cv2.resize(image, (width, height))  # the network-input variant: back to source geometry
    decoded = time.perf_counter()
    x, info = model.preprocess(image)
    outputs = model.forward(x)
    forward = time.perf_counter()
    found = model.postprocess(outputs, info)
    done = time.perf_counter()
    result = inference_pb2.InferenceResult(frame_id=frame_id, payload_bytes=len(data))
    result.stage_seconds["decode"] = decoded - started
    result.stage_seconds["tail"] = forward - decoded
    result.stage_seconds["postprocess"] = done - forward
    for d in found:
        result.detections.add(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, class_id=d.class_id, label=d.label, score=d.score)
    return result


async def run_jpeg(model, images: list[np.ndarray], quality: int, size: str, window: int) -> Run:
    run = Run()
    executor = ThreadPoolExecutor(max_workers=2)
    server = grpc.aio.server(options=server_options())
    server.add_generic_rpc_handlers((jpeg_handler(model, executor),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as channel:
            call = channel.stream_stream(_JPEG_METHOD)()
            sent: dict[int, tuple[int, float]] = {}
            slots = asyncio.Semaphore(window)

            async def send() -> None:
                loop = asyncio.get_running_loop()
                for frame_id, image in enumerate(images):
                    await slots.acquire()
                    started = time.perf_counter()
                    source = image if size == "source" else cv2.resize(image, model.input_size[::-1])
                    ok, data = await loop.run_in_executor(
                        None, cv2.imencode, ".jpg", source, [cv2.IMWRITE_JPEG_QUALITY, quality])
                    encode_s = time.perf_counter() - started
                    sent[frame_id] = (time.monotonic_ns(), encode_s)
                    await call.write(_HEADER.pack(frame_id, image.shape[1], image.shape[0]) + data.tobytes())
                await call.done_writing()

            started = time.monotonic()
            sender = asyncio.create_task(send())
            async for raw in call:
                result = inference_pb2.InferenceResult.FromString(raw)
                slots.release()
                sent_ns, encode_s = sent.pop(result.frame_id)
                stages = dict(result.stage_seconds)
                stages["encode"] = encode_s
                # The whole model runs in the cloud: report it under "tail" and nothing under "head".
                run.add(stages, sent_ns, time.monotonic_ns(), result.payload_bytes, ("jpeg", result.frame_id),
                        list(result.detections))
            await sender
            run.elapsed = time.monotonic() - started
    finally:
        await server.stop(0)
        executor.shutdown()
    return run


def fidelity(run: Run, reference: list[list]) -> Fidelity:
    total = Fidelity(0, 0, 0, 0)
    for (_, frame_id, *_), dets in run.detections.items():
        total = total + compare(reference[frame_id], dets)
    return total


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def shares(run: Run) -> str:
    total = sum(run.stages.values()) or 1.0
    return " / ".join(f"{100 * run.stages[s] / total:.0f}" for s in STAGES)


async def main(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    model = load_model(args.model, weights=args.weights)
    engine = TailEngine(model)
    images = read_frames(args.frames, args.stride)
    clip = write_clip(images, Path(tempfile.mkdtemp(prefix="bench-pipeline-")) / "clip.avi")
    reference = []
    for image in images:
        x, info = model.preprocess(image)
        reference.append(model.postprocess(model.forward(x), info))
    print(f"{len(images)} frames (every {args.stride}th) of {VIDEO.name}, model {model.name}, window {args.window}, torch threads "
          f"{args.threads}; unsplit model: {sum(map(len, reference))} detections", flush=True)

    cut, choice, label = split_choice(args.streams_config, model.name)
    rows = []
    for streams in args.streams:
        run = await run_split_streams(model, engine, clip, cut, choice, streams, len(images), args.window)
        rows.append([str(streams), f"{1000 * statistics.median(run.latencies):.0f}",
                     f"{1000 * pct(run.latencies, 0.95):.0f}", f"{run.frames / run.elapsed:.1f}",
                     f"{statistics.mean(run.bytes):,.0f}", f"{8 * statistics.mean(run.bytes) * SOURCE_FPS / 1000:.0f}",
                     shares(run), f"{100 * run.overhead():.1f} %"])
        print(f"streams {streams}: done", flush=True)
    print(f"\n### Concurrent edge streams ({label}; {len(images)} frames per stream)\n")
    print(table(["streams", "latency p50 ms", "p95 ms", "frames/s (all)", "bytes/frame", "kbit/s per stream @10 fps",
                 "time share % " + " / ".join(STAGES) + " (network incl. transport queueing)", "codec+gRPC overhead / (head+tail)"], rows))

    configs = [("split", spec) for spec in args.configs]
    configs += [("jpeg", (quality, size)) for quality in args.jpeg for size in args.jpeg_sizes]
    runs = {config: Run() for config in configs}
    labels = {}
    for round_index in range(args.rounds):
        # Alternate the order between rounds so that load from other processes spreads over all rows.
        for kind, spec in configs if round_index % 2 == 0 else configs[::-1]:
            if kind == "split":
                cut, choice, labels[(kind, spec)] = split_choice(spec, model.name)
                run = await run_split_streams(model, engine, clip, cut, choice, 1, len(images), 1)
            else:
                quality, size = spec
                geometry = "768x432 source" if size == "source" else f"{model.input_size[1]}x{model.input_size[0]} input"
                labels[(kind, spec)] = f"JPEG q{quality}, {geometry}, whole model in cloud"
                run = await run_jpeg(model, images, quality, size, 1)
            runs[(kind, spec)].merge(run)
        print(f"round {round_index + 1}: done", flush=True)
    rows = [(labels[config], runs[config]) for config in configs]
    print(f"\n### Split vs JPEG on the same {len(images)} frames (one stream, window 1: no queueing; "
          f"{args.rounds} interleaved rounds)\n")
    out = []
    for label, run in rows:
        f = fidelity(run, reference)
        out.append([label, f"{statistics.mean(run.bytes):,.0f}", f"{8 * statistics.mean(run.bytes) * SOURCE_FPS / 1000:.0f}",
                    f"{1000 * statistics.median(run.latencies):.0f}", f"{1000 * pct(run.latencies, 0.95):.0f}",
                    f"{f.lost} + {f.added} = {f.changed}", f"{100 * run.overhead():.1f} %"])
    print(table(["configuration", "bytes/frame", "kbit/s @10 fps", "latency p50 ms", "p95 ms",
                 f"fidelity: lost + added (of {args.rounds} x {sum(map(len, reference))})", "overhead"], out))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolo-fastest-1.1-xl")
    parser.add_argument("--weights", default=str(_SHARED / "models" / "yolo-fastest-1.1"))
    parser.add_argument("--frames", type=int, default=40, help="frames of the shared video per stream")
    parser.add_argument("--stride", type=int, default=10, help="take every stride-th frame of the video")
    parser.add_argument("--window", type=int, default=4, help="in-flight window of part 1 (part 2 uses 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the edges and cloud share the CPU)")
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    parser.add_argument("--streams-config", default="80:shipped",
                        help="cut:levels[:clip_min:clip_max], cut:profile.json or cut:shipped for part 1")
    parser.add_argument("--configs", type=lambda s: s.split(","),
                        default=["22:4", "22:8", "80:8", "80:shipped", "80:16:-20:24", "80:32:-16:16"],
                        help="split configurations for part 2")
    parser.add_argument("--jpeg", type=lambda s: [int(x) for x in s.split(",")], default=[50, 90])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of part 2 (fidelity summed)")
    parser.add_argument("--jpeg-sizes", type=lambda s: s.split(","), default=["source", "input"])
    return parser.parse_args(argv)


if __name__ == "__main__":
    if not VIDEO.is_file():
        sys.exit(f"{VIDEO} is absent: the benchmark reads ../shared/data (see its README).")
    asyncio.run(main(parse_args()))
