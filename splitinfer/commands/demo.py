"""`splitinfer demo`: the whole pipeline in one command, with a live progress line and a summary.

Starts a cloud (in this process, or as a `splitinfer cloud` subprocess), streams a video (by default the
sample video in ../shared/data when present, or a camera with --source 0) through the edge, prints
fps, kbit/s, bits per element and latency as it goes, then a summary table.
"""

from __future__ import annotations

import argparse

from splitinfer.commands import WEIGHTS_OPTION, runtime_options
from splitinfer.commands.edge import CODEC_OPTIONS, PARTITION_OPTIONS, SOURCE_OPTIONS, VIEW_OPTIONS
from splitinfer.sample_data import shared_data_dir
from splitinfer.channel_options import DEFAULT_MAX_MESSAGE_BYTES
from splitinfer.settings import DEFAULT_MODEL, Option

NAME = "demo"
HELP = ("Run edge and cloud together on a video (default: the sample video in ../shared/data) and print live "
        "throughput, rate and latency, then a summary.")
SAMPLE_VIDEO = ("video", "one-by-one-person-detection.mp4")
DEFAULT_LOG_LEVEL = "WARNING"  # the progress line and the summary say what matters
OPTIONS = [
    Option("source", "Video file, camera index (0) or URL (default: the sample video in ../shared/data)."),
    Option("frames", "Frames to stream (0: the whole source). The demo stops at 100 by default; `splitinfer edge` "
           "streams until the source ends.", cast=int, default=100),
    Option("cloud-mode", "Run the cloud in this process or as a `splitinfer cloud` subprocess.", default="inprocess",
           choices=("inprocess", "subprocess")),
    Option("model", "Registry name of the model to serve.", default=DEFAULT_MODEL),
    WEIGHTS_OPTION,
    *PARTITION_OPTIONS,
    *CODEC_OPTIONS,
    *runtime_options.OPTIONS,
    Option("window", "Frames in flight (sent, awaiting results) at most.", cast=int, default=4),
    Option("mode", "Capture mode: auto, live (newest frame wins) or file (every frame).", default="auto",
           choices=("auto", "live", "file")),
    Option("annotate", "Also write an annotated video to this file (.mp4 or .avi)."),
    Option("jsonl", "Also write every frame's result as JSON lines to this file."),
    Option("max-message-bytes", "Largest gRPC message sent or received.", cast=int, default=DEFAULT_MAX_MESSAGE_BYTES),
    *SOURCE_OPTIONS,
    Option("preview", "Serve the live page (annotated picture, charts) while the demo runs; its address is printed "
           "(--preview-port picks the port).", flag=True, default=False),
    *VIEW_OPTIONS,
    Option("display", "Show the annotated picture on this desktop (a window with GUI OpenCV, else the live page in "
           "the browser).", flag=True, default=False),
]


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from splitinfer.errors import ConfigError

    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")  # when run without the CLI
    source = args.source
    if source is None:
        sample = shared_data_dir().joinpath(*SAMPLE_VIDEO)
        if not sample.is_file():
            raise ConfigError(f"no --source given and the sample video {sample} is absent: pass --source FILE, "
                              "--source 0 for a webcam, or set SPLITINFER_SHARED_DATA.")
        source = str(sample)
    from splitinfer.commands.edge import settings_from_args
    from splitinfer.services.demo import DemoOptions, run_demo

    from splitinfer.channel_security import ChannelSecurity
    from splitinfer.services.edge.preflight import check_edge
    from splitinfer.services.edge.views import ViewRequest

    # Edge and cloud meet on 127.0.0.1 inside this command: plaintext never leaves the machine.
    edge = settings_from_args(args, source=source, cloud="", stream_id="demo", give_up_after_s=30.0,
                              security=ChannelSecurity(plaintext=True))
    resolved = check_edge(edge, connect_timeout_s=0)  # the demo starts its own cloud
    view = ViewRequest.from_args(args, "splitinfer demo", preview=args.preview)
    options = DemoOptions(edge, cloud_mode=args.cloud_mode, annotate=args.annotate, jsonl=args.jsonl, view=view,
                          resolved=resolved)
    return asyncio.run(run_demo(options))
