"""Slow subscribers in Python and Node see results no older than the cloud's max lag, and are told what they lost.

A publisher puts 20 results a second through the cloud's own hub (as Infer does) while three subscribers take one
result every 2 s: the async ResultSubscriber, the blocking `subscribe` and the Node.js example. Before credits
(SubscribeWithCredits), gRPC's buffers held their backlog and the results they read grew 1 s staler every second.
The full 80 s run is bench/slow_subscribers.py (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from google.protobuf import timestamp_pb2

from splitinfer.clients import ResultSubscriber, subscribe
from splitinfer.services.cloud.server import CloudConfig
from splitinfer.v1 import inference_pb2
from tests.services.conftest import PLAINTEXT, REPO, run, running_cloud
from tests.services.test_node_consumer import node_example  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow

STREAM = "site-a/cam-slow"
SECONDS = 30.0
READ_EVERY_S = 2.0
PUBLISH_EVERY_S = 0.05
# Transit and a busy machine's scheduling between the subscriber's check and the test's clock.
SLACK_S = 1.0


def result_captured_now(frame_id: int) -> inference_pb2.InferenceResult:
    capture = inference_pb2.CaptureInfo(capture_time=timestamp_pb2.Timestamp(), image_width=640, image_height=480)
    capture.capture_time.GetCurrentTime()
    return inference_pb2.InferenceResult(stream_id=STREAM, frame_id=frame_id, capture=capture, model="m")


def age_s(capture_time: timestamp_pb2.Timestamp) -> float:
    return time.time() - capture_time.ToNanoseconds() / 1e9


async def publish(hub, stop: asyncio.Event) -> int:
    frame_id = 0
    while not stop.is_set():
        await hub.publish(result_captured_now(frame_id))
        frame_id += 1
        await asyncio.sleep(PUBLISH_EVERY_S)
    return frame_id


async def read_async(address: str) -> list[tuple[float, int]]:
    seen = []
    async with ResultSubscriber(address, [STREAM], security=PLAINTEXT) as results:
        await results.wait_subscribed()
        ends = time.monotonic() + SECONDS
        async for item in results:
            seen.append((age_s(item.result.capture.capture_time), item.dropped))
            if time.monotonic() > ends:
                return seen
            await asyncio.sleep(READ_EVERY_S)
    return seen


def read_blocking(address: str) -> list[tuple[float, int]]:
    seen = []
    for item in subscribe(address, [STREAM], timeout=SECONDS, security=PLAINTEXT):
        seen.append((age_s(item.result.capture.capture_time), item.dropped))
        time.sleep(READ_EVERY_S)
    return seen


async def read_node(address: str, folder) -> list[tuple[float, int]]:
    count = int(SECONDS / READ_EVERY_S)
    node = await asyncio.create_subprocess_exec(
        "node", "consume.js", "--grpc", address, "--plaintext", "--stream", STREAM, "--count", str(count),
        "--handle-ms", str(int(READ_EVERY_S * 1000)), "--protos", str(REPO / "protos"), cwd=folder,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    seen = []
    while line := await asyncio.wait_for(node.stdout.readline(), SECONDS + 60):
        record = json.loads(line)
        if record.get("source") == "grpc":
            captured = timestamp_pb2.Timestamp(seconds=int(record["result"]["capture"]["capture_time"]["seconds"]),
                                               nanos=record["result"]["capture"]["capture_time"]["nanos"])
            seen.append((age_s(captured), int(record["dropped"])))
    assert await node.wait() == 0, (await node.stderr.read()).decode()
    return seen


def test_slow_subscribers_in_python_and_node_never_see_results_older_than_the_max_lag(engine, node_example) -> None:
    max_lag = CloudConfig.subscriber_max_lag_s
    assert 0 < max_lag <= 10.0  # the default bounds staleness at 10 s or less

    async def scenario():
        async with running_cloud(engine, subscriber_max_lag_s=max_lag) as cloud:
            address = f"127.0.0.1:{cloud.port}"
            stop = asyncio.Event()
            publisher = asyncio.create_task(publish(cloud.hub, stop))
            readers = await asyncio.gather(read_async(address), asyncio.to_thread(read_blocking, address),
                                           read_node(address, node_example))
            stop.set()
            return readers, await publisher

    readers, published = run(scenario(), timeout=SECONDS + 120)
    for name, seen in zip(("ResultSubscriber", "subscribe", "node"), readers, strict=True):
        ages = [age for age, _ in seen]
        assert len(seen) >= SECONDS / READ_EVERY_S - 2, (name, len(seen))
        assert max(ages) <= max_lag + SLACK_S, (name, [round(a, 1) for a in ages])
        assert sum(dropped for _, dropped in seen) > 0, name
    assert published > 0
