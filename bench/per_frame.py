"""CPU time of the per-frame path: codec + gRPC against head + tail, edge and cloud in separate processes.

Each round starts a cloud process (CloudServer, plaintext loopback, the default 2 workers) and an edge
process (build_pipeline + EdgeStreamer, as `splitinfer edge` does) for every tree compared, in alternating
order, streams --warm-up frames, then measures --frames frames of the shared video (every --stride-th, held
in memory, so capture costs nothing) at the cut with the codec profile shipped with the model. Measured is
CPU time, not wall time: each process's own (time.process_time over the measured frames: every thread,
gRPC's included), and the thread CPU time of preprocess, head, encode (codec + FeatureFrame), decode
(FeatureFrame -> tensors), tail and NMS around the calls that do them. The overhead of splitting is the
rest: (edge CPU - preprocess - head) + (cloud CPU - tail - NMS), i.e. encode, decode and the whole
asyncio / executor / gRPC / protobuf path on both sides, divided by head + tail. Per process, the rows
"loop thread" and "gRPC threads" (gRPC core's threads and grpc.aio's poller) say where that rest runs
(/proc schedstat). Torch and OpenCV get --threads threads, so that preprocess and head run in the thread
that is timed. Mean +- standard error over the rounds; with --baseline, the difference of the two trees
per round (paired) too.

    python bench/per_frame.py                                   # this tree, 5 rounds
    python bench/per_frame.py --floor                           # wake-ups and a bare gRPC round trip
    git archive HEAD~3 | tar -x -C /tmp/base && python bench/per_frame.py --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The package-dir mapping of pyproject.toml: how a tree's folders become splitinfer's subpackages.
_PACKAGE_DIRS = {"codec": "codec", "dnn": "dnn", "services": "services", "clients": "clients"}
COMPONENTS = ("preprocess", "head", "encode", "decode", "tail", "nms")



def _grpc_thread(name: str) -> bool:
    """gRPC core's own threads, or grpc.aio's poller thread that hands their completions to the event loop."""
    return name.startswith(("event_engine", "grpc_global_tim", "lifeguard")) or "_poll_wrapper" in name


# -- the two roles (run in their own processes) ----------------------------------------------------------
def _thread_cpu() -> dict[str, float]:
    """CPU seconds of every thread of this process so far (/proc schedstat, ns), by Python thread name, else
    the OS name and thread id."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            run_ns = int((task / "schedstat").read_text().split()[0])
            comm = (task / "comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            continue
        out[names.get(int(task.name), f"{comm}-{task.name}")] = run_ns / 1e9
    return out


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


class _Clock:
    """Thread CPU time of wrapped calls, summed per component (reset when the measurement starts)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(COMPONENTS, 0.0)
        self._lock = threading.Lock()

    def wrap(self, owner: object, attribute: str, component: str) -> None:
        inner = getattr(owner, attribute)

        def timed(*args, **kwargs):
            started = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - started
                with self._lock:
                    self.seconds[component] += elapsed

        setattr(owner, attribute, timed)

    def reset(self) -> None:
        with self._lock:
            self.seconds = dict.fromkeys(COMPONENTS, 0.0)


async def _cloud_role(args: argparse.Namespace) -> None:
    import cv2
    import torch

    from splitinfer.services.cloud.server import CloudConfig, CloudServer

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    server = CloudServer(CloudConfig(model=args.model, weights=args.weights, host="127.0.0.1", port=0,
                                     metrics_port=-1, plaintext=True, device="cpu"))
    await server.start()
    engine = server.servicer.engine
    clock = _Clock()
    split = engine.open_stream(args.model, args.cut)  # cached: the streams get this very object
    clock.wrap(split, "tail", "tail")
    clock.wrap(engine.model, "postprocess_batch", "nms")
    clock.wrap(engine, "_decode", "decode")
    print(f"port {server.port}", flush=True)
    loop = asyncio.get_running_loop()
    started = 0.0
    threads: dict[str, float] = {}
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "reset":
            clock.reset()
            started = time.process_time()
            threads = _thread_cpu()
            print("ok", flush=True)
        elif line == "report":
            print(json.dumps({"cpu": time.process_time() - started, **clock.seconds,
                              "threads": _delta(_thread_cpu(), threads)}), flush=True)
        else:
            break
    await server.stop(grace=0)


class _MemoryGrabber:
    """The FrameGrabber interface over frames in memory; holds the first measured frame until `go` is set."""

    def __init__(self, images: list, warm_up: int) -> None:
        from splitinfer.services.edge.capture import CaptureMode

        self.mode = CaptureMode.FILE
        self.images = images
        self.warm_up = warm_up
        self.go = threading.Event()
        self._next = 0

    def get(self, timeout: float = 0.5):
        from splitinfer.services.edge.capture import CapturedFrame, EndOfSource

        if self._next >= len(self.images):
            raise EndOfSource("end of the frames", False)
        if self._next == self.warm_up and not self.go.wait(timeout):
            return None
        image = self.images[self._next]
        self._next += 1
        return CapturedFrame(self._next, image, time.time_ns(), time.monotonic_ns())


async def _edge_role(args: argparse.Namespace) -> None:
    import cv2
    import torch

    from splitinfer.channel_security import ChannelSecurity
    from splitinfer.dnn import load_model
    from splitinfer.services.edge.app import EdgeSettings, build_pipeline
    from splitinfer.services.edge.capture import FrameGrabber
    from splitinfer.services.edge.client import EdgeStreamer, StreamerConfig

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)  # preprocess resizes in the calling thread, where its CPU time is counted
    total = args.warm_up + args.frames
    with FrameGrabber(args.video, max_frames=total * args.stride) as grabber:
        images = [frame.image for frame in grabber.frames() if frame.sequence % args.stride == 0][:total]
    cloud = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--role", "cloud", "--model", args.model, "--weights", args.weights,
        "--cut", args.cut, "--threads", str(args.threads), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert cloud.stdin is not None and cloud.stdout is not None

    async def ask(command: str) -> str:
        cloud.stdin.write(f"{command}\n".encode())
        await cloud.stdin.drain()
        return (await cloud.stdout.readline()).decode().strip()

    model = load_model(args.model, weights=args.weights)
    pipeline = build_pipeline(EdgeSettings(source="memory", model=args.model, cut=args.cut), model)
    clock = _Clock()
    clock.wrap(model, "preprocess", "preprocess")
    clock.wrap(pipeline.split, "head", "head")
    clock.wrap(pipeline, "encode", "encode")
    port = int((await cloud.stdout.readline()).decode().split()[1])
    grabber = _MemoryGrabber(images, args.warm_up)
    results = 0
    started = 0.0
    threads: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    ended: asyncio.Future = loop.create_future()
    reports: list[asyncio.Task] = []

    async def begin() -> None:
        nonlocal started, threads
        assert await ask("reset") == "ok"
        clock.reset()
        started = time.process_time()
        threads = _thread_cpu()
        grabber.go.set()

    def on_result(outcome) -> None:
        nonlocal results
        results += 1
        if outcome.result.HasField("error"):
            raise SystemExit(f"frame {outcome.result.frame_id} failed: {outcome.result.error.message}")
        if results == args.warm_up:
            loop.create_task(begin())
        elif results == total:  # measured up to here: the stream's and the processes' ends are not per frame
            ended.set_result((time.process_time() - started, _thread_cpu(), dict(clock.seconds)))
            reports.append(loop.create_task(ask("report")))

    config = StreamerConfig(cloud=f"127.0.0.1:{port}", stream_id="bench-per-frame",
                            security=ChannelSecurity(plaintext=True), window=args.window, max_results=total)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="edge") as executor:
        await EdgeStreamer(config, pipeline, grabber, on_result, executor=executor).run()
    edge_cpu, edge_threads, seconds = await ended
    cloud_report = json.loads(await reports[0])
    cloud.stdin.write(b"quit\n")
    await cloud.stdin.drain()
    await cloud.wait()
    edge = {"cpu": edge_cpu, **seconds, "threads": _delta(edge_threads, threads)}
    print(json.dumps({"frames": args.frames, "edge": edge, "cloud": cloud_report}), flush=True)


# -- the floor: what a wake-up and a bare gRPC round trip cost on this machine --------------------------------
async def _floor(args: argparse.Namespace) -> None:
    import grpc

    from splitinfer.channel_options import channel_options, server_options

    gap, count = 0.03, 60
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1)

    async def echo(requests, context):
        async for request in requests:
            yield request[:500]

    server = grpc.aio.server(options=server_options())
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.stream_stream_rpc_method_handler(echo)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    rows = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as channel:
            call = channel.stream_stream("/bench.Echo/Echo")()
            payload = os.urandom(3000)

            async def round_trip() -> None:
                await call.write(payload)
                await call.read()

            async def hop() -> None:
                await loop.run_in_executor(executor, len, payload)

            async def per_call(work, pause: float) -> float:
                await work()
                started = time.process_time()
                for _ in range(count):
                    await work()
                    if pause:
                        await asyncio.sleep(pause)
                return 1e6 * (time.process_time() - started) / count

            async def nothing() -> None:
                pass

            sleep_us = await per_call(nothing, gap)
            started = time.process_time()
            for _ in range(count):
                time.sleep(gap)
            rows.append(("time.sleep(30 ms), one thread wake-up", 1e6 * (time.process_time() - started) / count))
            rows.append(("asyncio.sleep(30 ms), one event loop wake-up", sleep_us))
            rows.append(("executor hop after 30 ms idle (minus the sleep)", await per_call(hop, gap) - sleep_us))
            rows.append(("gRPC round trip, 3 kB up, 0.5 kB down, back to back", await per_call(round_trip, 0)))
            rows.append(("gRPC round trip after 30 ms idle (minus the sleep)", await per_call(round_trip, gap) - sleep_us))
            await call.done_writing()
    finally:
        await server.stop(0)
        executor.shutdown()
    print(f"CPU us per event (this process, client and server of the round trip together; {count} each)")
    print("| event | CPU us |\n|---|---:|")
    for label, value in rows:
        print(f"| {label} | {value:.0f} |")


# -- the orchestrator ---------------------------------------------------------------------------------------
def _layout(tree: Path, folder: Path) -> Path:
    """A folder whose `splitinfer` package is `tree`'s (the pyproject package-dir mapping, as symlinks)."""
    package = folder / "splitinfer"
    package.mkdir(parents=True)
    for entry in (tree / "splitinfer").iterdir():
        (package / entry.name).symlink_to(entry.resolve())
    for name, source in _PACKAGE_DIRS.items():
        (package / name).symlink_to((tree / source).resolve())
    return folder


def _run_edge(args: argparse.Namespace, pythonpath: Path | None) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [sys.executable, __file__, "--role", "edge", "--model", args.model, "--weights", args.weights,
               "--cut", args.cut, "--threads", str(args.threads), "--frames", str(args.frames), "--warm-up",
               str(args.warm_up), "--stride", str(args.stride), "--window", str(args.window), "--video", args.video]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the edge process failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _figures(run: dict) -> dict[str, float]:
    """Per-frame CPU ms of one run: the components, the rest of each process, and the overhead in %."""
    edge, cloud, frames = run["edge"], run["cloud"], run["frames"]
    ms = {name: 1e3 * value / frames for name, value in (
        ("preprocess", edge["preprocess"]), ("head", edge["head"]), ("encode", edge["encode"]),
        ("edge other", edge["cpu"] - edge["preprocess"] - edge["head"] - edge["encode"]),
        ("decode", cloud["decode"]), ("tail", cloud["tail"]), ("nms", cloud["nms"]),
        ("cloud other", cloud["cpu"] - cloud["decode"] - cloud["tail"] - cloud["nms"]),
        ("edge process", edge["cpu"]), ("cloud process", cloud["cpu"]))}
    for side, report in (("edge", edge), ("cloud", cloud)):
        threads = report["threads"]
        ms[f"{side} loop thread"] = 1e3 * threads.get("MainThread", 0.0) / frames
        ms[f"{side} gRPC threads"] = 1e3 * sum(seconds for name, seconds in threads.items()
                                               if _grpc_thread(name)) / frames
    ms["overhead"] = ms["encode"] + ms["edge other"] + ms["decode"] + ms["cloud other"]
    ms["head + tail"] = ms["head"] + ms["tail"]
    ms["overhead %"] = 100 * ms["overhead"] / ms["head + tail"]
    ms["codec %"] = 100 * (ms["encode"] + ms["decode"]) / ms["head + tail"]
    return ms


def _mean_se(values: list[float]) -> str:
    mean = statistics.mean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return f"{mean:.3f} +- {se:.3f}"


def _orchestrate(args: argparse.Namespace) -> None:
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    scratch = Path(tempfile.mkdtemp(prefix="bench-per-frame-"))
    if args.baseline:
        trees.insert(0, ("baseline", _layout(Path(args.baseline), scratch / "baseline")))
    figures: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    for round_index in range(args.rounds):
        for label, pythonpath in trees if round_index % 2 == 0 else trees[::-1]:
            figures[label].append(_figures(_run_edge(args, pythonpath)))
            print(f"round {round_index + 1} {label}: overhead {figures[label][-1]['overhead %']:.1f} %",
                  file=sys.stderr, flush=True)
    rows = list(figures[trees[0][0]][0])
    print(f"model {args.model}, cut {args.cut}, shipped codec profile, {args.frames} frames (every {args.stride}th of "
          f"{Path(args.video).name}) after {args.warm_up} warm-up frames, window {args.window}, torch threads "
          f"{args.threads}; CPU ms per frame, mean +- SE over {args.rounds} rounds"
          + (f" (interleaved with {args.baseline})" if args.baseline else ""))
    header = ["CPU per frame"] + [label for label, _ in trees] + (["difference"] if args.baseline else [])
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        cells = [_mean_se([f[row] for f in figures[label]]) for label, _ in trees]
        if args.baseline:
            cells.append(_mean_se([new[row] - old[row] for old, new in zip(figures["baseline"], figures["this tree"])]))
        unit = "" if row.endswith("%") else " ms"
        print(f"| {row}{unit} | " + " | ".join(cells) + " |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from splitinfer.sample_data import shared_data_dir

    shared = shared_data_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("orchestrate", "edge", "cloud"), default="orchestrate",
                        help=argparse.SUPPRESS)
    parser.add_argument("--model", default="yolo-fastest-1.1-xl")
    parser.add_argument("--weights", default=str(shared / "models" / "yolo-fastest-1.1"))
    parser.add_argument("--video", default=str(shared / "video" / "one-by-one-person-detection.mp4"))
    parser.add_argument("--cut", default="80")
    parser.add_argument("--frames", type=int, default=60, help="measured frames per round and tree")
    parser.add_argument("--warm-up", type=int, default=10, help="frames streamed before the measurement")
    parser.add_argument("--stride", type=int, default=2, help="take every stride-th frame of the video")
    parser.add_argument("--window", type=int, default=4, help="the edge's in-flight window (its default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each process")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--floor", action="store_true", help="only measure what a thread wake-up, an executor "
                        "hop and a bare gRPC round trip cost in CPU on this machine")
    parser.add_argument("--baseline", help="another source tree (e.g. `git archive REV | tar -x -C DIR`) to "
                        "measure interleaved with this one")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.role == "cloud":
        asyncio.run(_cloud_role(arguments))
    elif arguments.role == "edge":
        asyncio.run(_edge_role(arguments))
    elif arguments.floor:
        asyncio.run(_floor(arguments))
    else:
        if not Path(arguments.video).is_file():
            sys.exit(f"{arguments.video} is absent: the benchmark reads ../shared/data (see its README).")
        _orchestrate(arguments)
