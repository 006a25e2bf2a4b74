"""Slow subscribers: how stale are the results a reader taking one result every 2 s sees, and is the publisher slowed?

An in-process cloud (default settings: --subscriber-max-lag 10 s, --subscriber-queue 256) publishes --rate
results a second through its hub (as Infer does; no model runs) while these readers take one result every
--read-every seconds for --seconds seconds, all at once:

- `ResultSubscriber`  the async Python client (SubscribeWithCredits, 16 granted ahead)
- `subscribe`         the blocking Python client (SubscribeWithCredits, one granted per result asked for)
- `node`              clients/examples/node-consumer/consume.js (SubscribeWithCredits), with --node-dir
- `Subscribe`         a plain Subscribe call read slowly: what a client without credits sees
- `Subscribe-nobdp`   the same with the client option grpc.http2.bdp_probe=0 (no receive-window growth)

Per reader: results read, their age when read (now - capture time: p50 and max), and the `dropped` total it was
told. For the publisher: results published against the target and the slowest hub.publish call.

    python bench/slow_subscribers.py --node-dir /tmp/node-consumer    # a folder where `npm ci` ran
    python bench/slow_subscribers.py --seconds 20 --rate 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import time
from pathlib import Path

import grpc
from google.protobuf import timestamp_pb2

from splitinfer.channel_options import channel_options
from splitinfer.channel_security import ChannelSecurity
from splitinfer.clients import ResultSubscriber, subscribe
from splitinfer.dnn import load_model
from splitinfer.sample_data import shared_data_dir
from splitinfer.services.cloud.engine import TailEngine
from splitinfer.services.cloud.server import CloudConfig, CloudServer
from splitinfer.v1 import inference_pb2, inference_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
MODEL = "yolo-fastest-1.1-xl"
STREAM = "site-a/cam-slow"
PLAINTEXT = ChannelSecurity(plaintext=True)


def captured_now(frame_id: int) -> inference_pb2.InferenceResult:
    capture = inference_pb2.CaptureInfo(capture_time=timestamp_pb2.Timestamp(), image_width=640, image_height=480)
    capture.capture_time.GetCurrentTime()
    return inference_pb2.InferenceResult(stream_id=STREAM, frame_id=frame_id, capture=capture, model=MODEL)


def age_s(capture_time: timestamp_pb2.Timestamp) -> float:
    return time.time() - capture_time.ToNanoseconds() / 1e9


async def publish(hub, rate: float, stop: asyncio.Event) -> dict:
    """Publish at `rate` per second on a fixed schedule; how many, and the slowest publish call."""
    started, count, slowest = time.monotonic(), 0, 0.0
    while not stop.is_set():
        before = time.perf_counter()
        await hub.publish(captured_now(count))
        slowest = max(slowest, time.perf_counter() - before)
        count += 1
        await asyncio.sleep(max(0.0, started + count / rate - time.monotonic()))
    return {"published": count, "target": round((time.monotonic() - started) * rate),
            "slowest_publish_ms": round(slowest * 1000, 3)}


async def read_result_subscriber(address: str, seconds: float, every: float) -> list[tuple[float, int]]:
    seen = []
    async with ResultSubscriber(address, [STREAM], security=PLAINTEXT) as results:
        ends = time.monotonic() + seconds
        async for item in results:
            seen.append((age_s(item.result.capture.capture_time), item.dropped))
            if time.monotonic() > ends:
                break
            await asyncio.sleep(every)
    return seen


def read_blocking(address: str, seconds: float, every: float) -> list[tuple[float, int]]:
    seen = []
    for item in subscribe(address, [STREAM], timeout=seconds, security=PLAINTEXT):
        seen.append((age_s(item.result.capture.capture_time), item.dropped))
        time.sleep(every)
    return seen


async def read_plain_subscribe(address: str, seconds: float, every: float, options: list) -> list[tuple[float, int]]:
    """A client without credits: a plain Subscribe call, read slowly."""
    seen = []
    async with grpc.aio.insecure_channel(address, options=channel_options() + options) as channel:
        call = inference_pb2_grpc.InferenceServiceStub(channel).Subscribe(
            inference_pb2.SubscribeRequest(stream_ids=[STREAM]))
        ends = time.monotonic() + seconds
        async for response in call:
            seen.append((age_s(response.result.capture.capture_time), response.dropped))
            if time.monotonic() > ends:
                break
            await asyncio.sleep(every)
        call.cancel()
    return seen


async def read_node(address: str, seconds: float, every: float, folder: Path) -> list[tuple[float, int]]:
    shutil.copy(REPO / "clients/examples/node-consumer/consume.js", folder / "consume.js")  # beside its packages
    node = await asyncio.create_subprocess_exec(
        "node", "consume.js", "--grpc", address, "--plaintext", "--stream", STREAM, "--count",
        str(int(seconds / every)), "--handle-ms", str(int(every * 1000)), "--protos", str(REPO / "protos"),
        cwd=folder, stdout=asyncio.subprocess.PIPE)
    seen = []
    while line := await node.stdout.readline():
        record = json.loads(line)
        if record.get("source") == "grpc":
            stamp = record["result"]["capture"]["capture_time"]
            seen.append((age_s(timestamp_pb2.Timestamp(seconds=int(stamp["seconds"]), nanos=stamp["nanos"])),
                         int(record["dropped"])))
    await node.wait()
    return seen


async def main(args: argparse.Namespace) -> None:
    weights = shared_data_dir() / "models" / "yolo-fastest-1.1"
    engine = TailEngine(load_model(MODEL, weights=str(weights)))
    server = CloudServer(CloudConfig(model=MODEL, host="127.0.0.1", port=0, metrics_port=-1, plaintext=True),
                         engine=engine)
    await server.start()
    address = f"127.0.0.1:{server.port}"
    stop = asyncio.Event()
    readers = {
        "ResultSubscriber": read_result_subscriber(address, args.seconds, args.read_every),
        "subscribe": asyncio.to_thread(read_blocking, address, args.seconds, args.read_every),
        "Subscribe": read_plain_subscribe(address, args.seconds, args.read_every, []),
        "Subscribe-nobdp": read_plain_subscribe(address, args.seconds, args.read_every,
                                                [("grpc.http2.bdp_probe", 0)]),
    }
    if args.node_dir is not None:
        readers["node"] = read_node(address, args.seconds, args.read_every, args.node_dir)
    try:
        await asyncio.sleep(0.5)
        publisher = asyncio.create_task(publish(server.hub, args.rate, stop))
        results = dict(zip(readers, await asyncio.gather(*readers.values()), strict=True))
        stop.set()
        published = await publisher
    finally:
        await server.stop(grace=0)
    print(f"{args.seconds:g} s, {args.rate:g} results/s published, one read every {args.read_every:g} s, "
          f"--subscriber-max-lag {server.config.subscriber_max_lag_s:g} s")
    print(f"publisher: {published}")
    print("| reader | results read | age p50 (s) | age max (s) | dropped (told) |")
    print("|---|---|---|---|---|")
    for name, seen in results.items():
        ages = [age for age, _ in seen] or [float("nan")]
        print(f"| {name} | {len(seen)} | {statistics.median(ages):.1f} | {max(ages):.1f} | "
              f"{sum(d for _, d in seen)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=80.0)
    parser.add_argument("--rate", type=float, default=20.0, help="results published per second")
    parser.add_argument("--read-every", type=float, default=2.0, help="seconds each reader takes per result")
    parser.add_argument("--node-dir", type=Path, help="a copy of the Node example where `npm ci` ran (no Node: "
                        "left out)")
    asyncio.run(main(parser.parse_args()))
