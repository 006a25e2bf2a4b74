"""Composition of the edge service: model, pipeline, grabber, streamer and output sinks.

`splitinfer edge` and `splitinfer demo` both run `run_edge`; it returns the counters when the source
has ended and every sent frame has its result.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from splitinfer.services.channel_options import DEFAULT_MAX_MESSAGE_BYTES
from splitinfer.services.edge.capture import CaptureMode, FrameGrabber
from splitinfer.services.edge.client import EdgeStreamer, FrameOutcome, StreamerConfig, StreamerStats
from splitinfer.codec import CodecProfile
from splitinfer.services.edge.pipeline import EdgePipeline, QuantizerChoice, packaged_profile

log = logging.getLogger("splitinfer.edge")


def default_stream_id(source: str) -> str:
    """A readable stream id from the host name and the source (e.g. `myhost-video.mp4`)."""
    tail = source.rstrip("/").rsplit("/", 1)[-1] or "source"
    raw = f"{socket.gethostname()}-{tail}"
    return re.sub(r"[^A-Za-z0-9._:@/-]", "-", raw).lstrip("-._:@/")[:128] or "edge"


@dataclass(frozen=True)
class EdgeSettings:
    """Everything `splitinfer edge` can be told (flags and SPLITINFER_* variables, see commands/edge.py)."""

    source: str
    cloud: str = "localhost:50051"
    mode: str | None = None
    stream_id: str | None = None
    model: str = "yolo-fastest-1.1-xl"
    weights: str | None = None
    cut: str | None = None
    profile: str | None = None
    levels: int | None = None
    clip_min: float | None = None
    clip_max: float | None = None
    coder: str | None = None
    intra_period: int | None = None
    window: int = 4
    frames: int | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    give_up_after_s: float = 60.0
    open_timeout_s: float = 10.0
    device: str = "cpu"  # the command line defaults to auto (commands/edge.py)


def build_pipeline(settings: EdgeSettings, model: Any | None = None) -> EdgePipeline:
    """Load the model (unless given), set up its head and quantizers for the chosen cut, and warm it up."""
    from splitinfer.dnn.device import place_model, resolve_device

    device = resolve_device(settings.device)  # a missing GPU is an error before the model loads
    if model is None:
        from splitinfer.dnn import load_model

        model = load_model(settings.model, weights=settings.weights)
    if device.type != "cpu":
        import torch

        place_model(model, device, torch.float32)
    profile, cut = settings.profile, settings.cut or model.default_cut
    if profile is None and settings.levels is None and settings.clip_min is None and settings.clip_max is None:
        shipped = packaged_profile(settings.model)
        if shipped is not None and CodecProfile.load(shipped).cut in (None, str(cut)):
            profile = str(shipped)
            log.info("using the codec profile shipped with %s: %s", settings.model, shipped.name)
    choice = QuantizerChoice.from_settings(profile=profile, levels=settings.levels,
                                           clip_min=settings.clip_min, clip_max=settings.clip_max,
                                           coder=settings.coder, intra_period=settings.intra_period)
    if settings.cut is None and choice.profile_cut is not None:
        cut = choice.profile_cut  # a profile's cut is the default cut
    pipeline = EdgePipeline(model, cut, choice)
    pipeline.warm_up()  # codec kernels and the head, now rather than on the first frame
    return pipeline


def build_grabber(settings: EdgeSettings) -> FrameGrabber:
    mode = None if settings.mode in (None, "", "auto") else CaptureMode(settings.mode)
    return FrameGrabber(settings.source, mode=mode, max_frames=settings.frames or None,
                        open_timeout_s=settings.open_timeout_s, read_timeout_s=settings.open_timeout_s)


async def run_edge(
    settings: EdgeSettings,
    sinks: Sequence[Callable[[FrameOutcome], None]],
    *,
    pipeline: EdgePipeline | None = None,
    on_streamer: Callable[[EdgeStreamer], None] | None = None,
    handle_signals: bool = False,
) -> StreamerStats:
    """Stream `settings.source` to the cloud until it ends; every result goes to each sink in turn."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="edge") as executor:
        if pipeline is None:
            pipeline = await loop.run_in_executor(executor, build_pipeline, settings)
        grabber = build_grabber(settings)

        def deliver(outcome: FrameOutcome) -> None:
            for sink in sinks:
                sink(outcome)

        config = StreamerConfig(cloud=settings.cloud, stream_id=settings.stream_id or default_stream_id(settings.source),
                                window=settings.window, max_message_bytes=settings.max_message_bytes,
                                give_up_after_s=settings.give_up_after_s)
        streamer = EdgeStreamer(config, pipeline, grabber, deliver, executor=executor)
        if on_streamer is not None:
            on_streamer(streamer)
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, streamer.stop)
        log.info("streaming %s (%s mode) to %s as stream %s, cut %s", settings.source, grabber.mode.value,
                 settings.cloud, config.stream_id, pipeline.cut)
        try:
            with grabber:
                return await streamer.run()
        finally:
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

