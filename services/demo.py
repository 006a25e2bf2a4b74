"""`splitinfer demo`: a cloud and an edge together on one video, with live progress and a summary."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from splitinfer.services.edge.app import EdgeSettings
from splitinfer.services.edge.client import FrameOutcome
from splitinfer.services.edge.resolve import ResolvedEdge
from splitinfer.errors import ServiceError
from splitinfer.logs import json_logs, say

CLOUD_START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class DemoOptions:
    """The edge's settings (its cloud address is filled in once the cloud runs) and what only the demo has."""

    edge: EdgeSettings
    cloud_mode: str = "inprocess"
    annotate: str | None = None
    jsonl: str | None = None
    view: Any = None  # a splitinfer.services.edge.views.ViewRequest (live page, window, annotated video)
    resolved: ResolvedEdge | None = None  # the edge settings as preflight resolved them


class ProgressReporter:
    """Counts results and shows a live line: frames, fps, kbit/s, bits per element, latency."""

    def __init__(self, total: int | None, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.frames = 0
        self.errors = 0
        self.detections = 0
        self.payload_bytes = 0
        self.elements = 0
        self.latencies: list[float] = []
        self.stage_seconds: dict[str, float] = {}
        self._last_print = 0.0
        self._tty = self.stream.isatty()
        self._source_times: tuple[float, float] | None = None  # first and last frame, in source seconds

    def __call__(self, outcome: FrameOutcome) -> None:
        result = outcome.result
        self.frames += 1
        at = outcome.frame.source_time_s
        first, last = self._source_times or (at, at)
        self._source_times = (min(first, at), max(last, at))
        self.errors += result.HasField("error")
        self.detections += len(result.detections)
        self.payload_bytes += result.payload_bytes
        self.elements += result.elements
        self.latencies.append(outcome.pipeline_seconds)
        for stage, seconds in result.stage_seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        now = time.monotonic()
        live = self._tty and not json_logs()  # a line redrawn in place; else one line (record) every 5 s
        if now - self._last_print >= (0.5 if live else 5.0):
            self._last_print = now
            if live:
                say("\r" + self.line(), stream=self.stream, end="")
            else:
                say(self.line(), stream=self.stream, logger="splitinfer.demo", fields=self.figures())

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def source_seconds(self) -> float:
        """The source time the answered frames cover, counting one frame interval per frame (0 until two frames)."""
        if self._source_times is None or self.frames < 2:
            return 0.0
        first, last = self._source_times
        return (last - first) * self.frames / (self.frames - 1)

    def kbit_s(self) -> float | None:
        """Coded feature bits per second of source time, the figure --rate-kbps budgets (a file replays faster or
        slower than real time, so its wall-clock rate says little); None until two frames came."""
        seconds = self.source_seconds
        return 8 * self.payload_bytes / 1000 / seconds if seconds > 0 else None

    def line(self) -> str:
        total = f"/{self.total}" if self.total else ""
        p50 = statistics.median(self.latencies) * 1000 if self.latencies else 0.0
        bpe = f" | {8 * self.payload_bytes / self.elements:.3f} bit/element" if self.elements else ""
        rate = self.kbit_s()
        shown = f"{rate:7.1f}" if rate is not None else "      -"
        return (f"frames {self.frames}{total} | {self.frames / self.elapsed:5.1f} fps | "
                f"{shown} kbit/s of source time{bpe} | latency p50 {p50:.0f} ms")

    def figures(self) -> dict[str, float | int | None]:
        """The progress line's figures, for its JSON record."""
        rate = self.kbit_s()
        return {"frames": self.frames, "fps": round(self.frames / self.elapsed, 2),
                "kbit_s_source_time": round(rate, 2) if rate is not None else None,
                "bits_per_element": round(8 * self.payload_bytes / self.elements, 4) if self.elements else None,
                "latency_p50_ms": round(statistics.median(self.latencies) * 1000, 1) if self.latencies else 0.0}

    def finish(self) -> None:
        if self._tty and not json_logs():
            say("\r" + self.line(), stream=self.stream)

    def summary(self) -> str:
        if not self.frames:
            return "no frame was answered"
        lat = sorted(self.latencies)
        p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
        stage_total = sum(self.stage_seconds.values()) or 1.0
        stages = ", ".join(f"{name} {1000 * s / self.frames:.1f} ms" for name, s in
                           sorted(self.stage_seconds.items(), key=lambda kv: -kv[1]) if s / stage_total > 0.001)
        rate = self.kbit_s()
        source_rate = f"{rate:.1f} kbit/s of source time, " if rate is not None else ""
        rows = [
            ("frames answered", f"{self.frames} ({self.errors} with errors) in {self.elapsed:.1f} s"),
            ("throughput", f"{self.frames / self.elapsed:.1f} frames/s"),
            *(self._feature_rows(source_rate) if self.elements else [
                ("payload (pixels or detections)", f"{self.payload_bytes / self.frames:,.0f} bytes/frame, {source_rate}"
                                                   f"(over the {self.elapsed:.1f} s replay: "
                                                   f"{8 * self.payload_bytes / 1000 / self.elapsed:.1f} kbit/s of "
                                                   "wall-clock time)")]),
            ("latency preprocess->result", f"p50 {1000 * statistics.median(lat):.0f} ms, p95 {1000 * p95:.0f} ms"),
            ("time per frame by stage", stages),
            ("detections", f"{self.detections} ({self.detections / self.frames:.2f} per frame)"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def _feature_rows(self, source_rate: str) -> list[tuple[str, str]]:
        """Rate rows of the features partition (the frames carried tensors)."""
        return [
            ("coded features", f"{self.payload_bytes / self.frames:,.0f} bytes/frame, {source_rate}"
                               f"{8 * self.payload_bytes / max(self.elements, 1):.3f} bits/element "
                               f"(over the {self.elapsed:.1f} s replay: "
                               f"{8 * self.payload_bytes / 1000 / self.elapsed:.1f} kbit/s of wall-clock time)"),
            ("raw float32 features", f"{4 * self.elements / self.frames:,.0f} bytes/frame "
                                     f"({4 * self.elements / max(self.payload_bytes, 1):.0f}x larger)"),
        ]


async def _start_subprocess_cloud(options: DemoOptions, workdir: Path) -> tuple[subprocess.Popen, str]:
    port_file = workdir / "cloud.port"
    command = [sys.executable, "-m", "splitinfer.cli", "cloud", "--host", "127.0.0.1", "--port", "0",
               "--plaintext", "--metrics-port", "-1", "--port-file", str(port_file), "--model", options.edge.model,
               "--max-message-bytes", str(options.edge.max_message_bytes), "--log-level", "WARNING",
               "--runtime", options.edge.runtime, "--threads", str(options.edge.threads)]
    if options.edge.weights:
        command += ["--weights", options.edge.weights]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + CLOUD_START_TIMEOUT_S
    while not port_file.exists():
        if process.poll() is not None:
            raise ServiceError(f"the cloud subprocess exited with code {process.returncode} before serving; "
                               "run `splitinfer cloud` alone to see why.")
        if time.monotonic() > deadline:
            process.kill()
            raise ServiceError(f"the cloud subprocess did not serve within {CLOUD_START_TIMEOUT_S:.0f} s.")
        await asyncio.sleep(0.1)
    return process, f"127.0.0.1:{int(port_file.read_text())}"


def _started(views: Any) -> None:
    views.on_started()
    for server in views.servers:
        if getattr(server, "url", None):
            say(f"live page: {server.url}", logger="splitinfer.demo", fields={"url": server.url})


async def run_demo(options: DemoOptions) -> int:
    """Run the demo; prints progress on stderr and the summary on stdout; returns the exit code."""
    from splitinfer.dnn import load_model
    from splitinfer.dnn.runtime import resolve_runtime
    from splitinfer.dnn.threads import apply_torch_threads
    from splitinfer.services.cloud.engine import TailEngine
    from splitinfer.services.cloud.server import CloudConfig, CloudServer
    from splitinfer.services.edge.app import build_pipeline, run_edge
    from splitinfer.services.edge.output import JsonLinesSink
    from splitinfer.services.edge.views import ViewRequest, build_views

    loop = asyncio.get_running_loop()
    settings = options.edge
    say(f"splitinfer demo: {settings.model} split between an edge and a cloud ({options.cloud_mode}) on "
        f"{settings.source}" + (f", {settings.frames} frames" if settings.frames else ""), logger="splitinfer.demo")
    # One model serves the edge's heads and the cloud's tails: two calls may run at once.
    runtime = resolve_runtime(settings.runtime, settings.threads, concurrent_calls=2, device=settings.device)
    apply_torch_threads(runtime.threads)
    with ThreadPoolExecutor(max_workers=1) as executor:
        model = await loop.run_in_executor(executor, lambda: load_model(settings.model, weights=settings.weights,
                                                                        runtime=runtime))
    pipeline = await loop.run_in_executor(None, build_pipeline, settings, model,
                                          options.resolved)  # also warms it up
    from splitinfer.services.edge.pipeline import EdgePipeline, quantizers_summary

    plan = getattr(pipeline, "plan", None)
    if getattr(pipeline, "probe", None) is not None:
        from splitinfer.services.edge.scene_probe import describe

        say(f"auto partition: {describe(pipeline.probe)}", logger="splitinfer.demo")
    if plan is not None:
        say(f"auto partition: {plan.describe()}", logger="splitinfer.demo")
    if not isinstance(pipeline, EdgePipeline):
        say(f"partition {plan.partition if plan else settings.partition} (cut {pipeline.cut})", logger="splitinfer.demo")
    elif pipeline.rate is None:
        described = "; ".join(f"{name}: {text}" for name, text in quantizers_summary(pipeline).items())
        coder = pipeline.profile.coder.name if pipeline.profile.coder else "default"
        say(f"cut after layer {pipeline.cut}; tensors {described}; coder {coder}", logger="splitinfer.demo")
    else:
        coder = pipeline.profile.coder.name if pipeline.profile.coder else "default"
        say(f"cut after layer {pipeline.cut}; coder {coder}; rate control at {pipeline.rate.ceiling_bps / 1000:g} "
            f"kbit/s over {len(pipeline.rate.ladder.points)} ladder points", logger="splitinfer.demo")
    progress = ProgressReporter(settings.frames)
    request = options.view or ViewRequest(title="splitinfer demo", annotate=options.annotate)
    views = build_views(request)
    sinks: list = [progress, *views.sinks]
    closers = [views.close]
    if options.jsonl:
        jsonl = open(options.jsonl, "w", encoding="utf-8")  # noqa: SIM115 - closed with the other sinks
        sinks.append(JsonLinesSink(jsonl))
        closers.append(jsonl.close)
    server = process = None
    with tempfile.TemporaryDirectory(prefix="splitinfer-demo-") as workdir:
        try:
            if options.cloud_mode == "subprocess":
                process, cloud = await _start_subprocess_cloud(options, Path(workdir))
            else:
                server = CloudServer(CloudConfig(model=settings.model, host="127.0.0.1", port=0, metrics_port=-1,
                                                 plaintext=True, max_message_bytes=settings.max_message_bytes),
                                     engine=TailEngine(model))
                await server.start()
                cloud = f"127.0.0.1:{server.port}"
            settings = dataclasses.replace(settings, cloud=cloud)
            stats = await run_edge(settings, sinks, pipeline=pipeline, handle_signals=True, servers=views.servers,
                                   on_streamer=views.on_streamer, on_started=lambda: _started(views))
        finally:
            for close in closers:
                close()
            if server is not None:
                await server.shutdown()
            if process is not None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    progress.finish()
    for line in progress.summary().splitlines():
        say(line, logger="splitinfer.demo")
    if pipeline.rate is not None:
        say(pipeline.rate.summary(), logger="splitinfer.demo")
    if stats.reconnects or stats.lost_on_reconnect:
        say(f"reconnects: {stats.reconnects}, frames resent: {stats.resent}, lost: {stats.lost_on_reconnect}",
            logger="splitinfer.demo")
    if options.annotate:
        say(f"annotated video: {os.path.abspath(options.annotate)}", logger="splitinfer.demo")
    return 0
