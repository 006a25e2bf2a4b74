"""The JPEG baseline as two processes: a sender that JPEG-codes each camera frame and a receiver that runs the
whole detector on it, over one bidirectional gRPC stream (bench/shaped_link.py runs them on a shaped link).

    python bench/baselines/jpeg_stream.py serve --host 10.77.0.2 --port 50052 --weights W --port-file F
    python bench/baselines/jpeg_stream.py send --cloud 10.77.0.2:50052 --source clip.avi --quality 50 --mode live

The sender reads the source like the edge does (splitinfer's FrameGrabber: `live` paces a file at its frame
rate and keeps only the newest frame, `file` sends every frame), keeps at most --window frames in flight,
and prints one JSON line per result in the shape of `splitinfer edge`'s lines (frame_id, capture monotonic
ns, latency_s from capture to result, payload_bytes, detections), then on stderr a `done:` line with the
edge's counters. Each message is a 12-byte header (frame id, source width, height) and the JPEG bytes; the
receiver answers an InferenceResult. No reconnects: a broken stream ends the sender with exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from splitinfer.channel_options import channel_options, server_options
from splitinfer.results import result_to_dict
from splitinfer.services.edge.capture import CapturedFrame, CaptureMode, EndOfSource, FrameGrabber
from splitinfer.v1 import inference_pb2

METHOD = "/bench.JpegInference/Infer"
HEADER = struct.Struct("<QHH")  # frame id, source width, source height
log = logging.getLogger("bench.jpeg")


def _infer(model, data: bytes, frame_id: int) -> bytes:
    """Decode one JPEG and run the whole model on it: a serialized InferenceResult."""
    import cv2
    import numpy as np

    started = time.perf_counter()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    decoded = time.perf_counter()
    x, info = model.preprocess(image)
    found = model.postprocess(model.forward(x), info)
    result = inference_pb2.InferenceResult(frame_id=frame_id, payload_bytes=len(data), model=model.name)
    result.stage_seconds["decode"] = decoded - started
    result.stage_seconds["tail"] = time.perf_counter() - decoded  # the whole model, reported where the tail goes
    for d in found:
        result.detections.add(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, class_id=d.class_id, label=d.label, score=d.score)
    return result.SerializeToString()


async def serve(args: argparse.Namespace) -> None:
    """Answer JPEG frames in order, one stream at a time, until killed."""
    import torch
    from splitinfer.dnn import load_model

    torch.set_num_threads(args.torch_threads)
    model = load_model(args.model, weights=args.weights)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jpeg-model")
    _infer(model, _blank_jpeg(), 0)  # warm up before saying we serve

    async def infer(request_iterator, context):
        loop = asyncio.get_running_loop()
        async for request in request_iterator:
            frame_id, _, _ = HEADER.unpack_from(request)
            yield await loop.run_in_executor(executor, _infer, model, request[HEADER.size:], frame_id)

    server = grpc.aio.server(options=server_options())
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.JpegInference", {"Infer": grpc.stream_stream_rpc_method_handler(infer)}),))
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    await server.start()
    if args.port_file:
        Path(args.port_file).write_text(str(port))
    log.info("JPEG receiver serving %s on %s:%d", args.model, args.host, port)
    await server.wait_for_termination()


def _blank_jpeg() -> bytes:
    import cv2
    import numpy as np

    return cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1].tobytes()


async def send(args: argparse.Namespace) -> int:
    """Stream the source as JPEG; one JSON line per result on stdout."""
    import cv2

    grabber = FrameGrabber(args.source, mode=CaptureMode(args.mode))
    loop = asyncio.get_running_loop()
    pending: dict[int, CapturedFrame] = {}
    slots = asyncio.Semaphore(args.window)
    counts = {"sent": 0, "results": 0}
    params = [cv2.IMWRITE_JPEG_QUALITY, args.quality]

    async with grpc.aio.insecure_channel(args.cloud, options=channel_options()) as channel:
        call = channel.stream_stream(METHOD)()

        async def sender() -> None:
            while True:
                await slots.acquire()
                try:
                    frame = await loop.run_in_executor(None, grabber.get, 0.5)
                except EndOfSource:
                    break
                if frame is None:
                    slots.release()
                    continue
                _, data = await loop.run_in_executor(None, cv2.imencode, ".jpg", frame.image, params)
                pending[frame.sequence] = frame
                height, width = frame.image.shape[:2]
                await call.write(HEADER.pack(frame.sequence, width, height) + data.tobytes())
                counts["sent"] += 1
                if args.frames and counts["sent"] >= args.frames:
                    break
            await call.done_writing()

        with grabber:
            task = asyncio.create_task(sender())
            try:
                async for raw in call:
                    received_ns = time.monotonic_ns()
                    result = inference_pb2.InferenceResult.FromString(raw)
                    frame = pending.pop(result.frame_id)
                    slots.release()
                    counts["results"] += 1
                    result.capture.capture_monotonic_ns = frame.monotonic_ns
                    record = result_to_dict(result)
                    record["latency_s"] = round((received_ns - frame.monotonic_ns) / 1e9, 6)
                    print(json.dumps(record), flush=True)
                await task
            except grpc.aio.AioRpcError as exc:
                log.error("the JPEG stream broke: %s %s", exc.code().name, exc.details())
                task.cancel()
                return 1
    stats = grabber.stats
    log.info("done: %d frames grabbed, %d dropped by the live grabber, %d sent, %d results (0 frame errors), "
             "0 reconnects, 0 resent, 0 lost on reconnect", stats.grabbed, stats.dropped, counts["sent"],
             counts["results"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve", help="run the whole model on JPEG frames")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=0)
    server.add_argument("--port-file", help="write the bound port here once serving")
    server.add_argument("--model", default="yolo-fastest-1.1-xl")
    server.add_argument("--weights", required=True)
    server.add_argument("--torch-threads", type=int, default=1)
    sender = commands.add_parser("send", help="stream a source as JPEG and print the results as JSON lines")
    sender.add_argument("--cloud", required=True)
    sender.add_argument("--source", required=True)
    sender.add_argument("--quality", type=int, default=50)
    sender.add_argument("--mode", choices=("live", "file"), default="live")
    sender.add_argument("--window", type=int, default=4)
    sender.add_argument("--frames", type=int, default=0, help="stop after sending this many (0: until the source ends)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        asyncio.run(serve(args))
        return 0
    return asyncio.run(send(args))


if __name__ == "__main__":
    sys.exit(main())
