"""`splitinfer calibrate-partitions`: measure each partition's rate-fidelity curve on a calibration video and write
the partition curves that `--partition auto` plans with (docs/PARTITIONS.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from splitinfer.commands import WEIGHTS_OPTION
from splitinfer.errors import ConfigError
from splitinfer.settings import DEFAULT_MODEL, PIXEL_PRESETS, Option

NAME = "calibrate-partitions"
HELP = ("Measure, on a calibration video (never the one you report on), the detection changes and bitrate of pixels "
        "and features at a ladder of bitrates and of detections, and each partition's CPU cost; write the partition "
        "curves JSON that --partition auto plans with.")


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(sorted({float(part) for part in text.split(",") if part.strip()}))
    except ValueError as exc:
        raise ConfigError(f"--rates-kbps wants comma-separated kbit/s like 32,64,128, got {text!r}.") from exc
    if not rates or any(not 0 < r < 1e6 for r in rates):
        raise ConfigError(f"--rates-kbps wants positive kbit/s like 32,64,128, got {text!r}.")
    return rates


OPTIONS = [
    Option("model", "registered model name", str, DEFAULT_MODEL),
    WEIGHTS_OPTION,
    Option("ladder", "codec ladder of the features partition (default: the one shipped with the model)", str, None),
    Option("rates-kbps", "bitrates at which pixels and features are measured, comma-separated kbit/s",
           str, "16,32,64,128,256,512"),
    Option("limit", "use at most this many frames of the video", int, 150),
    Option("frame-step", "use every N-th frame (the rates are spent at the video's frame rate divided by N)", int, 1),
    Option("pixel-preset", "x264 preset of the pixels partition", str, "veryfast", PIXEL_PRESETS),
    Option("intra-period", "frames between key frames (pixels)", int, None),
    Option("output", "partition curves file to write (default: <model>-partitions.json)", str, None),
    Option("progress", "show progress bars", flag=True, default=False),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="calibration video file")


def run(args: argparse.Namespace) -> int:
    from splitinfer.services.pixels import PixelSettings
    from splitinfer.services.preflight import check_model, check_weights_path
    from splitinfer.services.profiles import CodecSettings, resolve_codec
    from splitinfer.settings import DEFAULT_KEY_INTERVAL

    if not Path(args.video).is_file():
        raise ConfigError(f"{args.video} is not a video file: give the calibration video.")
    if args.limit is not None and args.limit < 1 or args.frame_step < 1:
        raise ConfigError(f"--limit and --frame-step must be at least 1, got {args.limit} and {args.frame_step}.")
    rates = _rates(args.rates_kbps)
    pixels = PixelSettings(preset=args.pixel_preset, crf=None, target_kbps=rates[0],
                           key_interval=args.intra_period or DEFAULT_KEY_INTERVAL)
    check_weights_path(args.weights)
    check_model(args.model, args.weights, None)
    ladder = resolve_codec(args.model, None, CodecSettings(), rated=True, ladder=args.ladder).ladder
    if ladder is None:
        raise ConfigError(f"model {args.model} ships no codec ladder: pass --ladder (splitinfer calibrate --ladder).")
    import torch

    from splitinfer.dnn import load_model
    from splitinfer.services.edge.partition_calibration import calibrate_partitions

    torch.set_num_threads(1)  # the edge's CPU cost is measured per core
    model = load_model(args.model, weights=args.weights)

    def report(point, ms) -> None:
        print(f"{point.partition:10s} {point.setting[:40]:40s} target {point.target_kbps or 0:6g} kbit/s: "
              f"{point.kbps:7.1f} kbit/s, {point.changes_per_frame:.3f} ± {point.changes_se:.3f} changes/frame, "
              f"edge {ms:.1f} ms/frame (CPU)", flush=True)

    with torch.no_grad():
        curves = calibrate_partitions(model, args.video, ladder, rates_kbps=rates, pixel_settings=pixels,
                                      step=args.frame_step, limit=args.limit, progress=args.progress, on_point=report)
    output = Path(args.output or f"{model.name}-partitions.json")
    curves.save(output)
    print(f"wrote {output} ({len(curves.points)} points; edge CPU ms/frame "
          f"{', '.join(f'{k} {v:.1f}' for k, v in curves.edge_ms.items())})")
    return 0
