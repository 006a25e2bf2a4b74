"""`splitinfer eval`: accuracy of a split model with and without the codec, paired on the same images.

DATA is a COCO-format image folder (annotations at ../annotations/instances_<folder>.json or --annotations):
AP and AP50; a folder with labels.csv: top-1 / top-5; any other image folder or a video file: fidelity to
the uncompressed model only. With a codec, the compressed figures, their paired differences with a
jackknife standard error, the real coded bits per element and bytes per frame come alongside.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from splitinfer.commands import WEIGHTS_OPTION, coder_name, runtime_options
from splitinfer.commands.edge import PARTITION_OPTIONS
from splitinfer.settings import DEFAULT_MODEL, Option

NAME = "eval"
HELP = "Accuracy (COCO AP, top-1/top-5, fidelity) of a split model, uncompressed vs. through the codec."


def _optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none", "all") else int(text)


OPTIONS = [
    Option("model", "registered model name (--list-models lists them)", str, DEFAULT_MODEL),
    WEIGHTS_OPTION,
    Option("cut", "cut name (Darknet: layer index); default: the model's default cut", str, None),
    Option("codec", "'none', 'default' (the model's shipped profile), or a codec profile JSON file (splitinfer calibrate writes one)", str, "none"),
    Option("levels", "uniform quantizer levels instead of a profile (needs --clip-min and --clip-max)", _optional_int, None),
    Option("clip-min", "lower clip value with --levels", float, None),
    Option("clip-max", "upper clip value with --levels", float, None),
    Option("coder", "entropy coder with --levels (BIN_CONTEXTS, NEIGHBOUR_CONTEXTS, SIGNED_NEIGHBOUR_CONTEXTS); "
           "default: the measured best for the tensor kind", coder_name, None),
    *PARTITION_OPTIONS,
    Option("rate-kbps", "with --partition pixels: the H.264 target bitrate; features: the budget its rate control "
           "holds; auto: the uplink budget. kbit/s at the source's frame rate after --frame-step (default for pixels: "
           "--pixel-crf)", float, None),
    Option("intra-period", "with --partition pixels (or auto): frames between key frames (default 30)", int, None),
    Option("ladder", "with --partition features and --rate-kbps: the codec ladder (default: the model's)", str, None),
    Option("annotations", "COCO instances JSON for DATA (default: DATA/../annotations/instances_<DATA name>.json)", str, None),
    Option("score-threshold", "lowest detection score kept for AP (Darknet's map uses 0.005)", float, 0.005),
    Option("live-threshold", "score threshold of deployed detections, used for fidelity lost/added counts", float, 0.25),
    Option("iou-threshold", "NMS IoU threshold", float, 0.45),
    Option("frame-step", "use every N-th image or video frame", int, 1),
    Option("limit", "use at most this many images or frames", _optional_int, None),
    *runtime_options.OPTIONS,
    Option("json", "print one JSON object instead of a table", flag=True, default=False),
    Option("progress", "show a progress bar on stderr", flag=True, default=True),
    Option("allow-truncated", "accept a video that ends well before its header's frame count (else: the report, a "
           "warning and exit 1)", flag=True, default=False),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="?", help="COCO image folder, folder with labels.csv, image folder or video file")
    parser.add_argument("--list-models", action="store_true", help="print the registered models and exit")


def _profile(args: argparse.Namespace):
    from splitinfer.codec import CodecProfile
    from splitinfer.dnn.eval_codec import profile_from_options
    from splitinfer.errors import ConfigError

    if args.levels is not None:
        if args.codec not in ("none", "", None):
            raise ConfigError("pass either --codec PROFILE.json or --levels/--clip-min/--clip-max, not both.")
        name = f"uniform N={args.levels} [{args.clip_min}, {args.clip_max}]"
        return profile_from_options(args.levels, args.clip_min, args.clip_max, args.coder), name
    if args.codec in ("none", "", None):
        return None, "none"
    if args.codec == "default":
        from splitinfer.services.profiles import packaged_profile

        packaged = packaged_profile(args.model)
        if packaged is None:
            raise ConfigError(f"model {args.model} has no default codec profile yet; pass --codec PROFILE.json "
                              "(splitinfer calibrate writes one) or --levels/--clip-min/--clip-max.")
        return CodecProfile.load(packaged), f"default (profiles/{packaged.name})"
    return CodecProfile.load(args.codec), str(args.codec)


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _print_table(report: dict, skipped: list[str]) -> None:
    print(f"model {report['model']}  cut {report['cut']}  codec {report['codec']}  images {report['images']}  "
          f"runtime {report['runtime']} ({report['threads']} thread{'s' if report['threads'] != 1 else ''})")
    if "top1" in report:
        rows = [("top-1", report["top1_ref"], report["top1"], report["top1_delta"], report["top1_delta_se"]),
                ("top-5", report["top5_ref"], report["top5"], None, None)]
    else:
        rows = [("AP", report["ap_ref"], report["ap"], report["ap_delta"], report["ap_delta_se"]),
                ("AP50", report["ap50_ref"], report["ap50"], report["ap50_delta"], report["ap50_delta_se"])]
    print(f"{'metric':<8}{'uncompressed':>14}{'compressed':>12}{'delta':>10}{'delta SE':>10}")
    for name, ref, comp, delta, se in rows:
        print(f"{name:<8}{_fmt(ref):>14}{_fmt(comp):>12}{_fmt(delta):>10}{_fmt(se):>10}")
    if "fidelity_ap50" in report:
        print(f"fidelity AP50 {_fmt(report['fidelity_ap50'])}  detections (score >= {report['live_score_threshold']}): "
              f"{report['detections_ref']} uncompressed, {report['detections_lost']} lost, {report['detections_added']} added "
              f"(lost + added {report['detections_lost'] + report['detections_added']} ± "
              f"{_fmt(report['detections_changed_se'], 1)} SE, 30-frame blocks)")
    else:
        print(f"top-1 agreement with the uncompressed model {_fmt(report['top1_agreement'])}")
    if report["elements_per_frame"]:
        print(f"rate {_fmt(report['bits_per_element'])} bits/element, {_fmt(report['bytes_per_frame'], 1)} "
              f"bytes/frame ({report['elements_per_frame']} elements at the cut)")
    else:
        print(f"rate {_fmt(report['bytes_per_frame'], 1)} bytes/frame")
    for line in skipped:
        print(f"skipped: {line}")


def _partition_candidate(args: argparse.Namespace, data: Path):
    """For another partition than fixed-profile features: a factory of its round trip (model -> candidate) and a
    name; (None, "") for features without --rate-kbps. Flags of another partition are refused, as `splitinfer edge`
    refuses them. Auto plans first (with this device's measured costs) and runs the partition it chose."""
    from splitinfer.errors import ConfigError
    from splitinfer.services.edge.preflight import check_partition_flags, check_pyav

    pixel_flags = [f"--{name}" for name, value in (("pixel-preset", args.pixel_preset), ("pixel-crf", args.pixel_crf),
                                                   ("pixel-size", args.pixel_size)) if value is not None]
    codec_flags = [flag for flag, value in (("--codec", args.codec not in ("none", "", None)),
                                            ("--levels", args.levels is not None), ("--cut", args.cut is not None))
                   if value]
    auto_flags = [flag for flag, value in (("--partitions", args.partitions), ("--edge-budget-ms", args.edge_budget_ms),
                                           ("--partition-curves", args.partition_curves),
                                           ("--probe-frames", args.probe_frames)) if value is not None]
    check_partition_flags(args.partition, codec_flags=codec_flags + (["--ladder"] if args.ladder is not None else []),
                          pixel_flags=pixel_flags, auto_flags=auto_flags, rate_kbps=args.rate_kbps,
                          intra_period=args.intra_period, pixel_crf=args.pixel_crf)
    if args.partition == "features":
        if args.rate_kbps is None:
            if args.intra_period is not None or args.ladder is not None:
                raise ConfigError("--intra-period and --ladder go with --rate-kbps for --partition features (a fixed "
                                  "profile carries its own intra period).")
            return None, ""
        if codec_flags:
            raise ConfigError(f"{', '.join(codec_flags)} fix(es) a profile, but --rate-kbps chooses among the points "
                              "of a codec ladder: drop it (pass --ladder for another ladder).")
    from splitinfer.services.pixels import pixel_settings_from_flags, video_file_fps
    from splitinfer.services.profiles import CodecSettings, resolve_codec

    # The ladder features would run (--ladder or the shipped one), read and checked before the model loads.
    codec = resolve_codec(args.model, None, CodecSettings(), rated=True, ladder=args.ladder) \
        if args.partition in ("features", "auto") else None
    fps = video_file_fps(str(data)) / args.frame_step
    pixel_settings = pixel_settings_from_flags(preset=args.pixel_preset, crf=args.pixel_crf, rate_kbps=args.rate_kbps,
                                               key_interval=args.intra_period, size=args.pixel_size) \
        if args.partition in ("pixels", "auto") else None
    if args.partition == "auto":
        from splitinfer.services.edge.auto_partition import AutoRequest

        request = AutoRequest(args.rate_kbps, args.edge_budget_ms, args.partitions, args.partition_curves,
                              args.probe_frames)
        check_pyav(request.check(), "auto")
    elif args.partition == "pixels":
        check_pyav(["pixels"], "pixels")

    def factory(model):
        partition, rate, prefix = args.partition, args.rate_kbps, ""
        if partition == "auto":
            from splitinfer.services.edge.auto_partition import auto_round_trip, resolve_plan
            from splitinfer.services.edge.scene_probe import read_probe_frames

            images = read_probe_frames(data, request.frames_to_probe(), step=args.frame_step)
            ladder = codec.ladder_for(model)
            resolved = resolve_plan(model, request, fps=fps, pixel_settings=pixel_settings, probe_images=images,
                                    ladder=ladder)
            return auto_round_trip(model, resolved, request, pixel_settings=pixel_settings, ladder=ladder, fps=fps)
        from splitinfer.services.edge.partitions import round_trip

        candidate, name = round_trip(model, partition, rate, pixel_settings=pixel_settings,
                                     ladder=codec.ladder_for(model) if partition == "features" else None, fps=fps)
        return candidate, prefix + name

    return factory, ""


def run(args: argparse.Namespace) -> int:
    from splitinfer.dnn import list_models, load_model
    from splitinfer.dnn.runtime import resolve_runtime
    from splitinfer.dnn.threads import apply_torch_threads
    from splitinfer.dnn.eval_images import iter_source
    from splitinfer.dnn.evaluation import (
        ClassificationReport, DetectionReport, coco_annotations_for, evaluate_classification, evaluate_detection,
    )
    from splitinfer.errors import ConfigError
    from splitinfer.runtimes import check_runtime_flags

    if args.list_models:
        for name in list_models():
            print(name)
        return 0
    if not args.data:
        raise ConfigError("give DATA: a COCO image folder, a folder with labels.csv, an image folder or a video file.")
    if args.frame_step < 1:
        raise ConfigError(f"--frame-step must be at least 1, got {args.frame_step}.")
    data = Path(args.data)
    if not data.exists():
        raise ConfigError(f"{data} does not exist; give an image folder or a video file.")
    profile, codec_name = _profile(args)
    factory, _ = _partition_candidate(args, data)  # before a profile's cut stands in for --cut
    if profile is not None:
        from splitinfer.services.profiles import ProfileMismatchError, check_matches

        try:
            check_matches(profile, args.model, args.cut)
        except ProfileMismatchError as exc:
            raise ConfigError(str(exc)) from exc
        if profile.cut is not None:
            args.cut = profile.cut
    from splitinfer.services.preflight import check_model, check_weights_path

    check_weights_path(args.weights)
    check_runtime_flags(args.runtime, args.threads)
    check_model(args.model, args.weights, args.cut)  # the name, weights path and cut, before the model is built
    runtime = resolve_runtime(args.runtime, args.threads)
    apply_torch_threads(runtime.threads)
    model = load_model(args.model, weights=args.weights, runtime=runtime)
    report: ClassificationReport | DetectionReport
    truncated: list[str] = []
    if factory is not None and (data / "labels.csv").is_file():
        raise ConfigError(f"--partition {args.partition} (or --rate-kbps) is evaluated on detection data (a video, a "
                          "COCO or image folder) only.")
    candidate, candidate_name = factory(model) if factory is not None else (None, "")
    if (data / "labels.csv").is_file():
        report = evaluate_classification(model, data, cut=args.cut, profile=profile, codec_name=codec_name,
                                         limit=args.limit, progress=args.progress)
    else:
        from splitinfer.dnn.eval_images import source_length

        annotations = Path(args.annotations) if args.annotations else (coco_annotations_for(data) if data.is_dir() else None)
        report = evaluate_detection(
            model, iter_source(data, step=args.frame_step, limit=args.limit, on_truncated=truncated.append),
            cut=args.cut, profile=profile, annotations=annotations, codec_name=codec_name,
            score_threshold=args.score_threshold, live_score_threshold=args.live_threshold,
            iou_threshold=args.iou_threshold, progress=args.progress,
            total=source_length(data, step=args.frame_step, limit=args.limit),
            candidate=candidate,
        )
        if candidate is not None:
            report.cut, report.codec = candidate.cut, candidate_name
            if hasattr(candidate, "summary"):  # auto: which partition coded which frames
                report.codec += f": {candidate.summary()}"
    result = report.to_dict()
    result["runtime"], result["threads"] = runtime.name, runtime.threads
    if truncated:
        result["truncated"] = truncated[0]
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        _print_table(result, report.skipped)
    if truncated and not args.allow_truncated:
        from splitinfer.logs import say

        say(f"splitinfer eval: warning: {truncated[0]}", stream=sys.stderr, level="WARNING", logger="splitinfer.eval")
        return 1
    return 0
