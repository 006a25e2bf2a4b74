"""The split pipeline, each partition and a JPEG baseline on a real shaped link: fps, latency, bytes, drops.

An edge and a cloud network namespace joined by a veth pair (tests/netlink.py; needs root, iproute2 and
iptables): the uplink shaped by tbf to each --uplinks rate, the downlink to --downlink, optional random loss
on both directions, and one run per sender with a --cut-s link cut. The source is the first --seconds of the
shared video, written once to a lossless FFV1 clip and read in live mode (paced at its 10 frames/s, newest
frame wins, so a sender that cannot keep up drops frames as it would with a camera). Senders:
- split: `splitinfer edge` with the fixed codec profile shipped with the model (the default) and a real
  `splitinfer cloud` on the far side;
- split-rate: the same with `--rate-kbps` at --rate-fraction of the uplink (only when this build's edge has it);
- pixels, features, detections, auto: `splitinfer edge --partition P`, with `--rate-kbps` at --rate-fraction of
  the uplink for all but detections (which sends what the whole model found, at no set rate); auto with its
  defaults (all three partitions, the edge budget one source frame interval, the curves shipped with the model).
  features is split-rate under its partition's name; auto-pixels-features is auto with `--partitions
  pixels,features` (an edge that will not run the whole model);
- jpegQ: bench/baselines/jpeg_stream.py, the camera frame as JPEG quality Q, the whole detector in the cloud.
Rates and latencies count the steady part of each run: frames captured --steady-after-s (2 s) after the first
result or later (the first frames of a live stream wait for the far side's first answer while the grabber
drops frames); a short stream before the first row warms the cloud up. Each run reports frames answered per
second, latency from capture to the result at the edge (p50, p95, mean +- s.e. over frames; frames of one run
are correlated, so the s.e. is a lower bound; max), then over the whole run the longest time between two
results, then again over the steady part payload bytes per frame and payload kbit/s, then over the whole run the
frames answered of those grabbed, the frames the sender never sent (dropped by the live grabber), reconnects,
and CPU milliseconds per answered frame of the sender (steady part) and of the far side's process (whole run:
the cloud's tail, or the JPEG receiver's whole model), and last the partition each steady frame was answered
in (the result's origin) with, for auto, the switches its edge counted, and the bytes the uplink carried per
frame sent (the tbf's counter over the whole run: payload and every header and acknowledgement together).

    sudo python bench/shaped_link.py --weights ../shared/data/models/yolo-fastest-1.1
    sudo python bench/shaped_link.py --uplinks 32,64,256 --losses 0 --cut-s 0 --seconds 30 \
        --senders pixels,features,detections,auto,auto-pixels-features     # the partitions (docs/RESULTS.md)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from splitinfer.sample_data import shared_data_dir
from tests.netlink import LinkUnavailable, Shape, ShapedLink
from tests.services.link_processes import (
    ENV,
    EdgeRun,
    edge_supports,
    process_cpu_s,
    run_edge,
    run_json_lines,
    start_cloud,
    write_clip,
)

JPEG_PORT = 50052
# One torch thread in the edge, as in the cloud (--threads 1) and the JPEG receiver: on a shared machine
# OpenMP threads that outnumber the free cores spin and stall (first heads of 4-5 s were seen with the default).
SENDER_ENV = {"OMP_NUM_THREADS": "1"}
SOURCE_FPS = 10.0
PARTITION_SENDERS = ("pixels", "features", "detections", "auto", "auto-pixels-features")
# The table's columns: a condition's three, the sender, summarize()'s, partition_cells()'s and wire_cell()'s.
HEADER = ("uplink kbit/s", "loss", "cut", "sender", "fps delivered", "latency p50 ms", "p95 ms", "mean +- s.e. ms",
          "max ms", "longest gap s", "bytes/frame", "payload kbit/s", "answered / grabbed", "never sent", "reconnects",
          "sender CPU ms/frame", "cloud CPU ms/frame", "partition (steady frames)", "switches",
          "uplink wire B/sent frame")
_SWITCHES = re.compile(r"auto partition: (\d+) switch\(es\)")


@dataclass(frozen=True)
class Condition:
    uplink_kbit: float
    loss: float
    cut_s: float

    def label(self) -> tuple[str, str, str]:
        return (f"{self.uplink_kbit:g}", f"{self.loss * 100:g} %", f"{self.cut_s:g} s" if self.cut_s else "-")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(run: EdgeRun, cloud_cpu_s: float, steady_after_s: float) -> list[str]:
    """The table cells of one run: rates and latencies over the steady part, counts over the whole run."""
    counts = [f"{len(run.results)} / {run.counters.get('grabbed', '?')}",
              str(run.counters.get("dropped", 0) + run.counters.get("lost_on_reconnect", 0)),
              str(run.counters.get("reconnects", "?"))]
    steady = run.steady(steady_after_s)
    n = len(steady)
    if n < 2:
        return [f"{n}", "-", "-", "-", "-", "-", "-", "-", *counts, "-", "-"]
    latencies = [r["latency_s"] for r in steady]
    first = int(steady[0]["capture"]["capture_monotonic_ns"])
    span_s = (max(run.arrival_ns(r) for r in steady) - first) / 1e9
    payload = [int(r["payload_bytes"]) for r in steady]
    se = statistics.stdev(latencies) / n ** 0.5
    arrivals = sorted(run.arrival_ns(r) for r in run.results)  # the whole run: a cut may stall start-up frames
    longest_gap_s = max(b - a for a, b in zip(arrivals, arrivals[1:], strict=False)) / 1e9
    cpu = run.cpu_s[len(run.results) - n:]  # the sender's CPU when each steady result was read
    sender_cpu = (cpu[-1] - cpu[0]) / (n - 1)
    return [f"{n / span_s:.1f}", f"{pct(latencies, 0.5) * 1000:.0f}", f"{pct(latencies, 0.95) * 1000:.0f}",
            f"{statistics.mean(latencies) * 1000:.0f} +- {se * 1000:.0f}", f"{max(latencies) * 1000:.0f}",
            f"{longest_gap_s:.1f}", f"{statistics.mean(payload):,.0f}",
            f"{sum(payload[1:]) * 8 / span_s / 1000:.0f}", *counts, f"{sender_cpu * 1000:.0f}",
            f"{cloud_cpu_s / len(run.results) * 1000:.0f}"]


def partition_cells(run: EdgeRun, steady_after_s: float) -> list[str]:
    """The partitions the steady frames were answered in, most frames first (`pixels 180, features 20`), and the
    switches the edge logged at its end (`-` where it ran no auto partition)."""
    counts = Counter(str(r.get("origin", {}).get("partition", "?")).removeprefix("PARTITION_").lower()
                     for r in run.steady(steady_after_s))
    switches = _SWITCHES.search(run.stderr)
    return [", ".join(f"{name} {n}" for name, n in counts.most_common()) or "-",
            switches.group(1) if switches else "-"]


def wire_cell(uplink_bytes: int, run: EdgeRun) -> str:
    """Bytes the uplink's tbf sent during the run per frame the sender sent: payload, the frame's metadata, gRPC,
    HTTP/2, TCP/IP and Ethernet framing, and the connection's set-up and acknowledgements, all together."""
    sent = run.counters.get("sent", 0)
    return f"{uplink_bytes / sent:,.0f}" if sent else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = shared_data_dir()
    parser.add_argument("--weights", type=Path, default=shared / "models" / "yolo-fastest-1.1")
    parser.add_argument("--video", type=Path, default=shared / "video" / "one-by-one-person-detection.mp4")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of video per run")
    parser.add_argument("--uplinks", type=lambda s: [float(x) for x in s.split(",")], default=[256.0, 1000.0],
                        help="uplink rates, kbit/s")
    parser.add_argument("--downlink", type=float, default=10_000.0, help="downlink rate, kbit/s")
    parser.add_argument("--losses", type=lambda s: [float(x) for x in s.split(",") if x], default=[0.0, 0.01],
                        help="packet loss probabilities, each applied to both directions")
    parser.add_argument("--cut-s", type=float, default=5.0, help="one more run per uplink with a cut this long (0: none)")
    parser.add_argument("--cut-at-s", type=float, default=6.0, help="seconds after the first result that the cut starts")
    parser.add_argument("--senders", type=lambda s: s.split(","), default=["split", "split-rate", "jpeg50", "jpeg90"])
    parser.add_argument("--rate-fraction", type=float, default=0.8,
                        help="split-rate, pixels, features, auto: --rate-kbps as a share of the uplink")
    parser.add_argument("--window", type=int, default=4, help="frames in flight, every sender")
    parser.add_argument("--steady-after-s", type=float, default=2.0,
                        help="rates and latencies count frames captured this long after the first result or later")
    parser.add_argument("--records", type=Path, default=None,
                        help="folder to keep each run's JSON lines in (RECORDS/<uplink>-<loss>-<cut>-<sender>.jsonl)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` removes the link

    conditions = [Condition(up, loss, 0.0) for up in args.uplinks for loss in args.losses]
    if args.cut_s:
        conditions += [Condition(up, 0.0, args.cut_s) for up in args.uplinks]
    has_rate = edge_supports("--rate-kbps")
    has_partitions = edge_supports("--partitions")
    load_before = os.getloadavg()
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="shaped-link-") as tmp:
        folder = Path(tmp)
        clip = write_clip(args.video, folder / "clip.avi", int(args.seconds * SOURCE_FPS), fps=SOURCE_FPS)
        try:
            link = ShapedLink(uplink=Shape(rate_kbit=args.uplinks[0]), downlink=Shape(rate_kbit=args.downlink))
            link.open()
        except LinkUnavailable as exc:
            print(f"no shaped link on this machine: {exc}", file=sys.stderr)
            return 2
        try:
            cloud = start_cloud(link, args.weights, folder, "--threads", "1")
            jpeg = start_jpeg_receiver(link, args.weights, folder) if any(
                sender.startswith("jpeg") for sender in args.senders) else None
            # One short stream first, so that no row pays for the cloud's first decode (kernel compilation).
            run_edge(link, clip, args.weights, folder, "bench-warm-up", "--frames", "3")
            for condition in conditions:
                for sender in args.senders:
                    if sender == "split-rate" and not has_rate:
                        rows.append([*condition.label(), sender, "n/a: rate control not in this build"])
                        continue
                    if sender in PARTITION_SENDERS and not has_partitions:
                        rows.append([*condition.label(), sender, "n/a: partitions not in this build"])
                        continue
                    link.shape(uplink=Shape(rate_kbit=condition.uplink_kbit, loss=condition.loss),
                               downlink=Shape(rate_kbit=args.downlink, loss=condition.loss))
                    far_side = jpeg if sender.startswith("jpeg") else cloud
                    assert far_side is not None
                    uplink_before = link.qdisc_stats("edge")["sent_bytes"]
                    run, cloud_cpu = run_one(link, sender, condition, args, clip, folder, far_side.pid)
                    uplink_bytes = link.qdisc_stats("edge")["sent_bytes"] - uplink_before
                    if args.records is not None:
                        args.records.mkdir(parents=True, exist_ok=True)
                        name = f"{condition.uplink_kbit:g}-{condition.loss:g}-{condition.cut_s:g}-{sender}.jsonl"
                        (args.records / name).write_text("".join(json.dumps(r) + "\n" for r in run.results))
                    rows.append([*condition.label(), sender, *summarize(run, cloud_cpu, args.steady_after_s),
                                 *partition_cells(run, args.steady_after_s), wire_cell(uplink_bytes, run)])
                    status = "" if run.returncode == 0 else f" (exit {run.returncode}: {run.stderr[-400:]})"
                    print(" | ".join(rows[-1]) + status, file=sys.stderr, flush=True)
        finally:
            link.close()
    load_after = os.getloadavg()
    print(f"\n### Shaped link: {args.seconds:g} s of video at {SOURCE_FPS:g} fps, live mode, window {args.window}, "
          f"downlink {args.downlink:g} kbit/s (load average before {load_before[0]:.1f}, after {load_after[0]:.1f})\n")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row + [""] * (len(HEADER) - len(row))) + " |")
    return 0


def start_jpeg_receiver(link: ShapedLink, weights: Path, folder: Path) -> subprocess.Popen:
    """bench/baselines/jpeg_stream.py's receiver (the whole model) on the cloud side; returns once it serves."""
    port_file = folder / "jpeg.port"
    with open(folder / "jpeg.log", "w") as jpeg_log:
        jpeg = link.popen("cloud", [sys.executable, str(REPO / "bench" / "baselines" / "jpeg_stream.py"),
                                    "serve", "--host", link.cloud_address, "--port", str(JPEG_PORT),
                                    "--weights", str(weights), "--port-file", str(port_file)],
                          stdout=jpeg_log, stderr=jpeg_log, env=ENV, cwd=REPO)
    while not port_file.exists():
        if jpeg.poll() is not None:
            raise SystemExit(f"the JPEG receiver failed:\n{(folder / 'jpeg.log').read_text()}")
        time.sleep(0.1)
    return jpeg


def run_one(link: ShapedLink, sender: str, condition: Condition, args: argparse.Namespace, clip: Path,
            folder: Path, cloud_pid: int) -> tuple[EdgeRun, float]:
    """One sender over the link as it is shaped now, with the condition's cut; the run and the cloud's CPU seconds."""
    cut_done: list[bool] = []
    first_arrival: list[float] = []

    def maybe_cut(count: int, record: dict) -> None:
        if not condition.cut_s or cut_done:
            return
        now = time.monotonic()
        if not first_arrival:
            first_arrival.append(now)
        if now - first_arrival[0] >= args.cut_at_s:
            link.cut()
            time.sleep(condition.cut_s)
            link.restore()
            cut_done.append(True)

    stream_id = f"bench-{sender}-{condition.uplink_kbit:g}-{condition.loss:g}-{condition.cut_s:g}"
    common = ["--window", str(args.window)]
    cloud_before = process_cpu_s(cloud_pid)
    rate = ["--rate-kbps", f"{condition.uplink_kbit * args.rate_fraction:g}"]
    if sender.startswith("split") or sender in PARTITION_SENDERS:
        extra = ["--mode", "live", "--reconnect-timeout", "120", *common]
        if sender == "split-rate":
            extra += rate
        elif sender in PARTITION_SENDERS:
            partition, _, restricted = sender.partition("-")
            extra += ["--partition", partition, *(rate if sender != "detections" else [])]
            if restricted:
                extra += ["--partitions", restricted.replace("-", ",")]
        run = run_edge(link, clip, args.weights, folder, stream_id, *extra, on_result=maybe_cut, env=SENDER_ENV)
    elif sender.startswith("jpeg"):
        argv = [sys.executable, str(REPO / "bench" / "baselines" / "jpeg_stream.py"), "send", "--cloud",
                f"{link.cloud_address}:{JPEG_PORT}", "--source", str(clip), "--quality", sender[4:], "--mode", "live",
                *common]
        run = run_json_lines(link, argv, folder / f"{stream_id}.log", on_result=maybe_cut, env=SENDER_ENV)
    else:
        raise SystemExit(f"unknown sender {sender!r}: split, split-rate, {', '.join(PARTITION_SENDERS)} "
                         "or jpegQ (e.g. jpeg50)")
    return run, process_cpu_s(cloud_pid) - cloud_before


if __name__ == "__main__":
    sys.exit(main())
