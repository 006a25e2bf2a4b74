"""`splitinfer edge`: camera/file/URL -> head -> codec -> cloud; detections as JSON lines on stdout."""

from __future__ import annotations

import argparse

from splitinfer.commands import WEIGHTS_OPTION, client_security, coder_name, runtime_options
from splitinfer.channel_options import DEFAULT_MAX_MESSAGE_BYTES
from splitinfer.settings import DEFAULT_MODEL, PIXEL_PRESETS, Option

NAME = "edge"
HELP = ("Run the edge service: read a video source, run the head of the model, stream coded features to the "
        "cloud and print its detections as JSON lines.")
CODEC_OPTIONS = [
    Option("cut", "Layer to cut the model after (default: the model's default cut)."),
    Option("profile", "Codec profile JSON (quantizer, coder, intra period), e.g. from `splitinfer calibrate`; "
           "default: the profile shipped with the model when --cut is its cut, else built-in clip ranges."),
    Option("levels", "Quantizer levels when no --profile is given (2..256; default 8 with the built-in ranges).",
           cast=int),
    Option("clip-min", "Lower clip value when no --profile is given (with --clip-max; default: built-in "
           "ranges measured on real activations).", cast=float),
    Option("clip-max", "Upper clip value when no --profile is given.", cast=float),
    Option("coder", "Entropy coder (BIN_CONTEXTS, NEIGHBOUR_CONTEXTS, SIGNED_NEIGHBOUR_CONTEXTS, "
           "TEMPORAL_CONTEXTS; any case, '-' or '_'); default: the profile's, else the measured default.", cast=coder_name),
    Option("intra-period", "With TEMPORAL_CONTEXTS: frames between intra frames; with --partition pixels: frames "
           "between key frames (default 30).", cast=int),
    Option("rate-kbps", "Hold this uplink budget (kbit/s of source time) by choosing per frame among the points of a "
           "codec ladder, and lower it when the link carries less (default: a fixed profile, no rate control). With "
           "--partition pixels: the H.264 target bitrate.", cast=float),
    Option("ladder", "Codec ladder for --rate-kbps, from `splitinfer calibrate --ladder` (default: the ladder "
           "shipped with the model)."),
]
# Shared with `splitinfer demo` (docs/PARTITIONS.md).
PARTITION_OPTIONS = [
    Option("partition", "What the edge sends: features (the head's coded tensors at --cut), pixels (H.264 video of "
           "the frames; the cloud runs the whole model), detections (the whole model runs here; the cloud checks "
           "and publishes its detections) or auto (the one with the fewest predicted detection changes within "
           "--rate-kbps and --edge-budget-ms, from the partition curves and this device's measured costs).",
           default="features", choices=("features", "pixels", "detections", "auto")),
    Option("partitions", "With --partition auto: the partitions it may choose, comma-separated (default: "
           "pixels,features,detections)."),
    Option("edge-budget-ms", "With --partition auto: CPU milliseconds per frame the edge may spend (default: one "
           "frame interval of the source, 1000 / fps).", cast=float),
    Option("partition-curves", "With --partition auto: partition curves JSON from `splitinfer calibrate-partitions` "
           "(default: the curves shipped with the model)."),
    Option("probe-frames", "With --partition auto: measure the partitions that fit on the source's first this many "
           "frames and plan on curves corrected by what they showed (the scene probe, docs/PARTITIONS.md; a live "
           "source waits for them); 0: plan from the curves alone (default 30)."),
    Option("pixel-preset", "With --partition pixels: the x264 preset, ultrafast..veryslow (default veryfast; tune "
           "zerolatency always).", choices=PIXEL_PRESETS),
    Option("pixel-crf", "With --partition pixels: x264's constant rate factor, 0..51, lower is better (default 28; "
           "--rate-kbps sets a bitrate instead).", cast=int),
    Option("pixel-size", "With --partition pixels: code the frames at the model's input size (input, default) or at "
           "the source's own size (native).", choices=("input", "native")),
]
SOURCE_OPTIONS = [
    Option("source-timeout", "Give up (exit 2) when a camera or URL gives no frame for this many seconds, saying "
           "why (0: keep retrying forever).", cast=float, default=30.0),
    Option("rtsp-transport", "RTSP over tcp or udp (auto: FFmpeg's default, UDP first).", default="auto",
           choices=("auto", "tcp", "udp")),
    Option("camera-width", "Ask a camera (index or /dev/videoN) for this frame width.", cast=int),
    Option("camera-height", "Ask a camera for this frame height.", cast=int),
    Option("camera-fps", "Ask a camera for this frame rate.", cast=float),
    Option("allow-truncated", "Accept a video file that ends well before the frame count in its header (else: "
           "a warning and exit 2).", flag=True, default=False),
]
VIEW_OPTIONS = [
    Option("preview-port", "Serve the live page (annotated picture, charts) on this port (0: a free one, -1: none).",
           cast=int, default=-1),
    Option("preview-host", "Address the live page listens on (0.0.0.0: every interface; mind who can see it).",
           default="127.0.0.1"),
]
OPTIONS = [
    Option("source", "Video source: camera index (0), file path, or rtsp:// / http:// URL.", default="0"),
    Option("cloud", "Address of the cloud service, HOST:PORT.", default="localhost:50051"),
    *client_security.OPTIONS,
    Option("mode", "live: newest frame wins (drops counted); file: every frame; auto: file for files, live "
           "otherwise.", default="auto", choices=("auto", "live", "file")),
    Option("stream-id", "Stream id (the same id resumes a stream after a reconnect; default: host-source)."),
    Option("model", "Registry name of the model to serve.", default=DEFAULT_MODEL),
    WEIGHTS_OPTION,
    *PARTITION_OPTIONS,
    *CODEC_OPTIONS,
    Option("device", "Where the head runs: auto (CUDA when torch sees a GPU), cpu, cuda or cuda:N; the codec "
           "stays on the CPU.", default="auto"),
    *runtime_options.OPTIONS,
    Option("window", "Frames in flight (sent, awaiting results) at most.", cast=int, default=4),
    Option("frames", "Stop after this many answered frames (0: until the source ends; `splitinfer demo` stops at 100 "
           "by default).", cast=int, default=0),
    Option("annotate", "Also write an annotated video to this file (.mp4 or .avi)."),
    Option("display", "Show annotated frames: a native window with GUI OpenCV, else the live page in the desktop's browser (needs a display).", flag=True,
           default=False),
    Option("reconnect-timeout", "Give up after this many seconds without a connection to the cloud (0: never).",
           cast=float, default=60.0),
    Option("max-message-bytes", "Largest gRPC message sent or received (both sides must agree).", cast=int,
           default=DEFAULT_MAX_MESSAGE_BYTES),
    Option("log-level", "Logging level on stderr.", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    *SOURCE_OPTIONS,
    Option("connect-timeout", "Before loading the model, check the cloud answers within this many seconds (0: "
           "skip the check).", cast=float, default=5.0),
    *VIEW_OPTIONS,
    Option("metrics-port", "Port of the edge's Prometheus /metrics endpoint (0: a free one, -1: none).", cast=int,
           default=-1),
    Option("metrics-host", "Address the /metrics endpoint listens on.", default="127.0.0.1"),
]


def settings_from_args(args: argparse.Namespace, **overrides: object):
    """EdgeSettings from parsed flags (shared with `splitinfer demo`)."""
    from splitinfer.services.edge.app import EdgeSettings

    values = dict(
        source=args.source, cloud=getattr(args, "cloud", "localhost:50051"), mode=getattr(args, "mode", None),
        stream_id=getattr(args, "stream_id", None), model=args.model, weights=args.weights, cut=args.cut,
        profile=args.profile, levels=args.levels, clip_min=args.clip_min, clip_max=args.clip_max,
        coder=args.coder, intra_period=args.intra_period, rate_kbps=args.rate_kbps, ladder=args.ladder,
        window=args.window, frames=args.frames or None,
        max_message_bytes=args.max_message_bytes,
        give_up_after_s=getattr(args, "reconnect_timeout", 60.0), device=getattr(args, "device", "cpu"),
        source_timeout_s=args.source_timeout, allow_truncated=args.allow_truncated,
        rtsp_transport=None if args.rtsp_transport == "auto" else args.rtsp_transport,
        camera_width=args.camera_width, camera_height=args.camera_height, camera_fps=args.camera_fps,
        runtime=getattr(args, "runtime", "torch"), threads=getattr(args, "threads", 0),
        partition=args.partition, pixel_preset=args.pixel_preset, pixel_crf=args.pixel_crf,
        pixel_size=args.pixel_size, partitions=args.partitions, edge_budget_ms=args.edge_budget_ms,
        partition_curves=args.partition_curves, probe_frames=args.probe_frames,
    )
    if hasattr(args, "plaintext"):
        values["security"] = client_security.security_from_args(args)
    values.update(overrides)
    return EdgeSettings(**values)


def _stop_while_starting(signum: int, frame: object) -> None:
    """SIGTERM before the event loop handles signals (imports, model load): a clean stop, not a bare exit 143."""
    from splitinfer.errors import StartupInterrupted

    raise StartupInterrupted("stopped by SIGTERM while starting; nothing was streamed.")


def run(args: argparse.Namespace) -> int:
    import signal
    import sys

    from splitinfer.errors import StartupInterrupted
    from splitinfer.logs import say

    signal.signal(signal.SIGTERM, _stop_while_starting)
    try:
        return _run(args)
    except StartupInterrupted as exc:
        say(f"splitinfer edge: {exc}", stream=sys.stderr, logger="splitinfer.edge")
        return 0


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from splitinfer.services.edge.app import run_edge
    from splitinfer.services.edge.output import JsonLinesSink
    from splitinfer.services.edge.preflight import check_edge
    from splitinfer.services.edge.views import ViewRequest, build_views

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(args)
    request = ViewRequest.from_args(args, f"splitinfer edge {settings.source}")  # checks ports and --display
    resolved = check_edge(settings, connect_timeout_s=args.connect_timeout)
    views = build_views(request)
    sinks: list = [JsonLinesSink(), *views.sinks]
    try:
        stats = asyncio.run(run_edge(settings, sinks, on_streamer=views.on_streamer, handle_signals=True,
                                     servers=views.servers, on_started=views.on_started, resolved=resolved))
    finally:
        views.close()
    streamer = views.streamers[0]
    capture = streamer.grabber.stats
    log = logging.getLogger("splitinfer.edge")
    log.info("done: %d frames grabbed, %d dropped by the live grabber, %d sent, %d results (%d frame errors), "
             "%d reconnects, %d resent, %d lost on reconnect", capture.grabbed, capture.dropped, stats.sent,
             stats.results, stats.frame_errors, stats.reconnects, stats.resent, stats.lost_on_reconnect)
    plan = getattr(streamer.pipeline, "plan", None)
    if plan is not None:
        log.info("auto partition: %d switch(es); ended with %s", stats.partition_switches, plan.describe())
    rate = getattr(streamer.pipeline, "rate", None)
    if rate is not None:
        log.info("%s", rate.summary())
    return 0
