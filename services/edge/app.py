"""Composition of the edge service: model, pipeline, grabber, streamer and output sinks.

`splitinfer edge` and `splitinfer demo` both run `run_edge`; it returns the counters when the source
has ended and every sent frame has its result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import signal
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from splitinfer.channel_security import ChannelSecurity
from splitinfer.channel_options import DEFAULT_MAX_MESSAGE_BYTES
from splitinfer.services.edge.backpressure import LinkMonitor
from splitinfer.services.edge.capture import CaptureMode, FrameGrabber
from splitinfer.services.edge.client import EdgeStreamer, FrameOutcome, StreamerConfig, StreamerStats
from splitinfer.codec import CodecProfile
from splitinfer.services.edge.pipeline import EdgePipeline
from splitinfer.services.edge.rate_control import RateController
from splitinfer.services.profiles import DEFAULT_LEVELS, DEFAULT_MODEL, CodecSettings
from splitinfer.services.edge.resolve import ResolvedEdge, resolve
from splitinfer.errors import StartupInterrupted
from splitinfer.services.edge.auto_partition import AutoRequest
from splitinfer.services.edge.partition_plan import Plan
from splitinfer.services.pixels import PixelSettings, pixel_settings_from_flags, video_file_fps

log = logging.getLogger("splitinfer.edge")


def default_stream_id(source: str) -> str:
    """A readable stream id from the host name and the source (e.g. `myhost-video.mp4`)."""
    tail = source.rstrip("/").rsplit("/", 1)[-1] or "source"
    raw = f"{socket.gethostname()}-{tail}"
    return re.sub(r"[^A-Za-z0-9._:@/-]", "-", raw).lstrip("-._:@/")[:128] or "edge"


@dataclass(frozen=True, kw_only=True)
class EdgeSettings(CodecSettings):
    """Everything `splitinfer edge` can be told (flags and SPLITINFER_* variables, see commands/edge.py); the
    feature codec's flags are CodecSettings' own (services/profiles.py). resolve() (services/edge/resolve.py)
    turns them into the one ResolvedEdge that preflight checks and build_pipeline consumes."""

    source: str
    cloud: str = "localhost:50051"
    security: ChannelSecurity = ChannelSecurity()
    mode: str | None = None
    stream_id: str | None = None
    model: str = DEFAULT_MODEL
    weights: str | None = None
    cut: str | None = None
    rate_kbps: float | None = None  # hold this budget by choosing among the ladder's points (None: a fixed profile)
    ladder: str | None = None  # the ladder for rate control (None: the model's shipped one)
    window: int = 4
    frames: int | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    give_up_after_s: float = 60.0
    open_timeout_s: float = 10.0
    source_timeout_s: float = 0.0  # a live source without a frame this long ends the edge (0: retry forever)
    rtsp_transport: str | None = None  # tcp or udp; None: FFmpeg's default
    camera_width: int | None = None
    camera_height: int | None = None
    camera_fps: float | None = None
    allow_truncated: bool = False
    device: str = "cpu"  # the command line defaults to auto (commands/edge.py)
    runtime: str = "torch"  # torch, onnxruntime or openvino (splitinfer.dnn.runtime)
    threads: int = 0  # per model call; 0: splitinfer.dnn.threads' default
    partition: str = "features"  # features, pixels, detections or auto (docs/PARTITIONS.md)
    pixel_preset: str | None = None  # None: DEFAULT_PRESET
    pixel_crf: int | None = None  # None: DEFAULT_CRF, unless --rate-kbps sets a bitrate
    pixel_size: str | None = None  # None: "input"
    partitions: str | None = None  # with auto: the partitions it may choose (None: all)
    edge_budget_ms: float | None = None  # with auto: CPU ms per frame (None: one frame interval)
    partition_curves: str | None = None  # with auto: the curves file (None: the model's shipped one)
    probe_frames: int | str | None = None  # with auto: the scene probe's frames (None: its default; 0: none)

    def auto_request(self) -> AutoRequest:
        return AutoRequest(self.rate_kbps, self.edge_budget_ms, self.partitions, self.partition_curves,
                           self.probe_frames)

    def source_fps(self) -> float:
        """The frame rate the source runs at, as far as is known (a camera's asked-for rate, a file's own, else 10)."""
        return self.camera_fps or video_file_fps(self.source)

    def pixel_settings(self) -> PixelSettings:
        """The pixels partition's encoder settings (ConfigError when they do not go together)."""
        return pixel_settings_from_flags(preset=self.pixel_preset, crf=self.pixel_crf, rate_kbps=self.rate_kbps,
                                         key_interval=self.intra_period, size=self.pixel_size)

    def codec_settings(self) -> CodecSettings:
        return CodecSettings.of(self)


def build_pipeline(settings: EdgeSettings, model: Any | None = None, resolved: ResolvedEdge | None = None) -> Any:
    """Load the model (unless given: the caller set its runtime and threads), set up the partition's work per frame
    (features: the head and quantizers of the chosen cut; pixels: the video encoder; detections: the whole model),
    and warm it up. `resolved`: these settings as preflight resolved them (else resolved here, once)."""
    from splitinfer.dnn.device import place_model, resolve_device
    from splitinfer.dnn.runtime import resolve_runtime
    from splitinfer.dnn.threads import apply_torch_threads

    runtime = resolve_runtime(settings.runtime, settings.threads, device=settings.device) if model is None \
        else model.runtime
    # A missing GPU is an error before the model loads; the compiled runtimes run on the CPU.
    device = resolve_device(settings.device if not runtime.compiled else "cpu")
    if model is None:
        from splitinfer.dnn import load_model

        apply_torch_threads(runtime.threads)  # torch preprocesses, and runs the head with --runtime torch
        model = load_model(settings.model, weights=settings.weights, runtime=runtime)
    if device.type != "cpu":
        import torch

        place_model(model, device, torch.float32)
    from splitinfer.services.edge.partitions import DetectionsPipeline, PixelPipeline  # torch: after preflight

    resolved = resolved or resolve(settings)
    if settings.partition == "auto":
        from splitinfer.services.edge.auto_partition import PartitionSwitcher, resolve_plan

        curves = resolved.curves
        assert curves is not None  # resolve() loads them for auto

        def build(plan: Plan) -> Any:
            chosen_settings = resolved_settings(settings, plan)
            return build_pipeline(chosen_settings, model, ResolvedEdge(chosen_settings, codec=resolved.codec))

        request = settings.auto_request()
        images = grab_probe_frames(settings, request.frames_to_probe())
        auto = resolve_plan(model, request, fps=settings.source_fps(), pixel_settings=settings.pixel_settings(),
                            curves=curves, probe_images=images, ladder=resolved.codec.ladder_for(model)
                            if resolved.codec is not None and "features" in curves.partitions else None)
        chosen = auto.plan
        pipeline = build(chosen)
        pipeline.plan = chosen
        pipeline.probe = auto.probe  # for the demo's summary; None without a probe
        # The switcher re-plans on the curves auto started from: corrected by the scene probe, when it ran.
        pipeline.switcher = PartitionSwitcher(auto.curves, auto.costs, chosen, partitions=settings.partitions,
                                              fps=settings.source_fps(), build=build)
        return pipeline
    if settings.partition == "pixels":
        fps = settings.source_fps()  # what the encoder spends a bitrate over
        pixels = PixelPipeline(model, settings.pixel_settings(), fps=fps)
        log.info("pixels partition: H.264 %s at %s, %s, key frame every %d frames", pixels.settings.preset,
                 "the model's input size" if pixels.settings.size == "input" else "the source's size",
                 f"{settings.rate_kbps:g} kbit/s" if settings.rate_kbps else f"crf {pixels.settings.crf}",
                 pixels.settings.key_interval)
        pixels.warm_up()
        return pixels
    if settings.partition == "detections":
        detections = DetectionsPipeline(model)
        log.info("detections partition: the whole model runs here; the cloud checks and publishes its detections")
        detections.warm_up()
        return detections
    codec = resolved.codec
    assert codec is not None  # resolve() resolves the features partition's codec
    if settings.rate_kbps is None:
        profile = codec.profile_for(model)
        log.info("using the codec profile %s", describe_profile(settings.profile, profile))
        pipeline = EdgePipeline(model, profile, percentile_levels=settings.levels or DEFAULT_LEVELS)
    else:
        ladder = codec.ladder_for(model)
        split = model.split(str(ladder.cut))  # resolve_ladder refuses a ladder without a cut
        elements = sum(math.prod(spec.shape) for spec in split.tensors)
        rate = RateController(ladder, elements, settings.rate_kbps * 1000)
        log.info("rate control: %g kbit/s over %d ladder points of cut %s", settings.rate_kbps, len(ladder.points),
                 ladder.cut)
        pipeline = EdgePipeline(model, ladder.points[-1], rate=rate)
    pipeline.warm_up()  # codec kernels and the head, now rather than on the first frame
    return pipeline


def grab_probe_frames(settings: EdgeSettings, count: int) -> list[Any]:
    """The source's first `count` frames for auto's scene probe, read by a grabber of their own before streaming
    starts: a file is then streamed from its first frame again; a live source waits for `count` new frames (they
    are measured, not sent: by the time the plan is made they are old). ConfigError when the source has fewer."""
    from splitinfer.errors import ConfigError
    from splitinfer.services.edge.capture import CaptureError, EndOfSource

    if count == 0:
        return []
    grabber = build_grabber(settings)
    if grabber.mode is CaptureMode.FILE:
        grabber.max_frames = count
    images: list[Any] = []
    started = time.monotonic()
    with grabber:
        while len(images) < count:
            try:
                frame = grabber.get(timeout=1.0)
            except EndOfSource as end:
                if end.error and not images:
                    raise CaptureError(end.reason) from None
                break
            if frame is not None:
                images.append(frame.image)
    if len(images) < count:
        raise ConfigError(f"{settings.source} gave {len(images)} frame(s), fewer than the {count} the scene probe of "
                          "--partition auto measures: lower --probe-frames (0: plan from the curves alone).")
    log.info("auto partition: the scene probe read %d frames of %s (%s mode) in %.1f s", count, settings.source,
             grabber.mode.value, time.monotonic() - started)
    return images


def resolved_settings(settings: EdgeSettings, chosen: Plan) -> EdgeSettings:
    """The settings of the partition a plan chose: its partition and the bitrate it holds (auto's flags dropped)."""
    detections = chosen.partition == "detections"
    return dataclasses.replace(
        settings, partition=chosen.partition, rate_kbps=chosen.rate_kbps,
        intra_period=None if detections else settings.intra_period,
        pixel_preset=settings.pixel_preset if chosen.partition == "pixels" else None,
        pixel_size=settings.pixel_size if chosen.partition == "pixels" else None)


def describe_profile(path: str | None, profile: CodecProfile) -> str:
    """One line for the log: where the profile came from and what it holds."""
    source = path or ("shipped with the model" if profile.figures else "from the flags")
    coder = profile.coder.name if profile.coder is not None else "default coder"
    return f"{source}; cut {profile.cut}, {coder}, intra period {profile.intra_period}"


def _partition_name(pipeline: Any) -> str:
    plan = getattr(pipeline, "plan", None)
    from splitinfer.v1 import inference_pb2

    name = inference_pb2.Partition.Name(pipeline.partition).removeprefix("PARTITION_").lower()
    return f"{name} (auto)" if plan is not None else name


def build_grabber(settings: EdgeSettings) -> FrameGrabber:
    mode = None if settings.mode in (None, "", "auto") else CaptureMode(settings.mode)
    grabber = FrameGrabber(settings.source, mode=mode, open_timeout_s=settings.open_timeout_s,
                           read_timeout_s=settings.open_timeout_s, source_timeout_s=settings.source_timeout_s,
                           rtsp_transport=settings.rtsp_transport, width=settings.camera_width,
                           height=settings.camera_height, request_fps=settings.camera_fps,
                           allow_truncated=settings.allow_truncated)
    if grabber.mode is CaptureMode.FILE:
        grabber.max_frames = settings.frames or None  # every frame is answered: read no more than asked for
    return grabber


async def run_edge(
    settings: EdgeSettings,
    sinks: Sequence[Callable[[FrameOutcome], None]],
    *,
    pipeline: Any | None = None,
    on_streamer: Callable[[EdgeStreamer], None] | None = None,
    handle_signals: bool = False,
    servers: Sequence[Any] = (),
    on_started: Callable[[], None] | None = None,
    resolved: ResolvedEdge | None = None,
) -> StreamerStats:
    """Stream `settings.source` to the cloud until it ends; every result goes to each sink in turn.

    `servers` (the live page, /metrics: objects with async start() and stop()) run on this loop meanwhile;
    `on_started` is called once they listen. `resolved`: what preflight's check_edge returned (the files it read
    are not read again). With handle_signals, SIGINT and SIGTERM stop the edge gracefully
    from the start: while the model loads, StartupInterrupted is raised (nothing was streamed); later, frames
    already sent still get their results.
    """
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    streamers: list[EdgeStreamer] = []

    def on_signal(name: str) -> None:
        if not stop_requested.is_set():
            log.info("%s received: stopping", name)
        stop_requested.set()
        for streamer in streamers:
            streamer.stop()

    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig.name)
    started: list[Any] = []
    try:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="edge") as executor:
            if pipeline is None:
                building = loop.run_in_executor(executor, build_pipeline, settings, None, resolved)
                stopper = asyncio.ensure_future(stop_requested.wait())
                racing: set[asyncio.Future[Any]] = {building, stopper}
                await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not building.done():
                    building.add_done_callback(lambda f: f.exception())  # the load finishes in its thread, unread
                    raise StartupInterrupted("stopped by a signal while loading the model; nothing was streamed.")
                pipeline = building.result()
            grabber = build_grabber(settings)
            live = grabber.mode is CaptureMode.LIVE
            if pipeline.rate is not None:
                pipeline.rate.allow_drop = live  # a file's frames are all answered

            def deliver(outcome: FrameOutcome) -> None:
                for sink in sinks:
                    sink(outcome)

            config = StreamerConfig(cloud=settings.cloud,
                                    stream_id=settings.stream_id or default_stream_id(settings.source),
                                    security=settings.security, window=settings.window,
                                    max_message_bytes=settings.max_message_bytes,
                                    give_up_after_s=settings.give_up_after_s, max_results=settings.frames or None)
            link = LinkMonitor(pipeline.rate) if pipeline.rate is not None and live else None
            streamer = EdgeStreamer(config, pipeline, grabber, deliver, executor=executor, link=link,
                                    switcher=getattr(pipeline, "switcher", None))
            streamers.append(streamer)
            if stop_requested.is_set():
                raise StartupInterrupted("stopped by a signal while starting; nothing was streamed.")
            if on_streamer is not None:
                on_streamer(streamer)
            log.info("streaming %s (%s mode) to %s (%s) as stream %s, partition %s, cut %s", settings.source,
                     grabber.mode.value, settings.cloud, settings.security.describe(), config.stream_id,
                     _partition_name(pipeline), pipeline.cut)
            for server in servers:
                await server.start()
                started.append(server)
            if on_started is not None:
                on_started()
            with grabber:
                return await streamer.run()
    finally:
        for server in reversed(started):
            await server.stop()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
