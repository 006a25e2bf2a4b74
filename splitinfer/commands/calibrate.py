"""`splitinfer calibrate`: choose the clip range and quantizer at a cut on calibration images; write a codec profile."""

from __future__ import annotations

import argparse
from pathlib import Path

from splitinfer.errors import ConfigError
from splitinfer.commands import WEIGHTS_OPTION, coder_name
from splitinfer.settings import DEFAULT_INTRA_PERIOD, DEFAULT_MODEL, Option

NAME = "calibrate"
HELP = ("Collect activation statistics at a cut on calibration images (never the evaluation set), choose the "
        "clip range and design the quantizer, and write a codec profile (JSON) for the edge.")

OPTIONS = [
    Option("model", "registered model name (splitinfer eval --list-models lists them)", str, DEFAULT_MODEL),
    Option("cut", "cut name (Darknet: layer index); default: the model's default cut", str, None),
    Option("data", "folder of calibration images, e.g. ../shared/data/coco-mini/calib2017", str, None),
    WEIGHTS_OPTION,
    Option("levels", "number of quantizer levels N (odd N keeps an exact zero for signed tensors)", int, 7),
    Option("quantizer", "uniform levels or the modified entropy-constrained quantizer", str, "uniform", ("uniform", "ecsq")),
    Option("lam", "ECSQ rate weight, in units of the uniform quantizer's distortion per bit", float, 1.0),
    Option("weight-power", "ECSQ distortion weight (1 + |x| / mean|x|) ** p; p > 0 protects large activations", float, 0.0),
    Option("clip", "clip range rule: percentile, mse (optimal for N uniform levels) or search (tail fidelity around mse)",
           str, "search", ("percentile", "mse", "search")),
    Option("percentile", "upper percentile of the percentile rule (the lower one is 100 minus it)", float, 99.99),
    Option("clip-scale", "stretch the percentile or MSE-optimal range by this factor (study: 1.5-2 keeps accuracy)",
           float, 1.0),
    Option("symmetric", "search only ranges [-c, c] (an exact zero level for odd N)", flag=True, default=False),
    Option("coder", "entropy coder written into the profile; auto picks the measured best for the tensor kind",
           coder_name, "auto"),
    Option("hysteresis", "with temporal-contexts: margin (fraction of a step, 0..1) within which an inter frame keeps "
           "the previous frame's level; the study found 0.05-0.1 saves 20-30 % of the bytes", float, 0.0),
    Option("rdo-lambda", "with temporal-contexts: rate-distortion weight of inter frames, in squared quantizer steps "
           "of error per bit saved (an element keeps its previous level, or a whole channel is skipped, where the "
           "error that adds is worth fewer bits; the error is weighted per channel by the tail's sensitivity measured on "
           "the calibration images; 0 = off, hysteresis only; docs/RESULTS.md, codec v3 item 2)",
           float, 0.0),
    Option("intra-period", "frames between intra frames when streaming with temporal contexts", int,
           DEFAULT_INTRA_PERIOD),
    Option("ladder", "write a codec ladder for rate control (--rate-kbps) instead of one profile: its points as "
           "quantizer levels, comma-separated, each with an optional @hysteresis (e.g. 3@0.5,3@0.25,5,7,9,13; default "
           "--hysteresis); each point is calibrated like a profile", str, None),
    Option("max-images", "use at most this many calibration images", int, None),
    Option("output", "profile file to write (default: <model>-cut<cut>.json)", str, None),
    Option("progress", "show progress bars", flag=True, default=True),
]


def run(args: argparse.Namespace) -> int:
    from splitinfer.codec.ladder import CodecLadder
    from splitinfer.codec.quantizer import MAX_HYSTERESIS, MAX_RDO_LAMBDA
    from splitinfer.dnn import load_model
    from splitinfer.dnn.calibration import channel_sensitivity, collect_calibration

    if not args.data:
        raise ConfigError("calibrate needs --data: a folder of calibration images (never the evaluation set), "
                          "e.g. ../shared/data/coco-mini/calib2017.")
    if args.levels is None or not 2 <= args.levels <= 256:
        raise ConfigError(f"--levels must be in 2..256, got {args.levels}.")
    if args.intra_period < 1:
        raise ConfigError(f"--intra-period must be >= 1, got {args.intra_period}.")
    if not 0.0 <= args.hysteresis <= MAX_HYSTERESIS:  # checked before calibrating, not after minutes of it
        raise ConfigError(f"--hysteresis must be a fraction of a step in [0, {MAX_HYSTERESIS}], got {args.hysteresis}.")
    if not 0.0 <= args.rdo_lambda <= MAX_RDO_LAMBDA:
        raise ConfigError(f"--rdo-lambda must be in [0, {MAX_RDO_LAMBDA}] squared steps per bit (0 = off), got "
                          f"{args.rdo_lambda}.")
    if not Path(args.data).is_dir():
        raise ConfigError(f"--data {args.data} is not a folder: pass a folder of calibration images, e.g. "
                          "../shared/data/coco-mini/calib2017.")
    from splitinfer.services.preflight import check_model, check_weights_path

    check_weights_path(args.weights)
    check_model(args.model, args.weights, args.cut)  # the name, weights path and cut, before the model is built
    ladder_levels = _ladder_levels(args.ladder) if args.ladder else None
    model = load_model(args.model, weights=args.weights)
    cut = args.cut or model.default_cut
    calibration = collect_calibration(model, cut, args.data, max_images=args.max_images, progress=args.progress)
    # RDO weights each channel's error by the tail's sensitivity to it, measured on the calibration images.
    weights = ({name: tuple(float(v) for v in w) for name, w in channel_sensitivity(model, calibration).items()}
               if args.rdo_lambda > 0 else {})
    if ladder_levels is None:
        profile = _calibrated_profile(args, model, calibration, args.levels, weights=weights)
        output = Path(args.output or f"{model.name}-cut{calibration.cut}.json")
        profile.save(output)
        _report(args, model, calibration, profile)
        print(f"wrote {output}")
        return 0
    points = sorted((_calibrated_profile(args, model, calibration, levels, margin, weights=weights)
                     for levels, margin in ladder_levels),
                    key=lambda p: (p.figures["bits_per_element"], -p.hysteresis))
    settings = {name: getattr(args, name) for name in ("ladder", "quantizer", "clip", "clip_scale", "percentile",
                                                       "symmetric", "coder", "hysteresis", "rdo_lambda",
                                                       "intra_period")}
    ladder = CodecLadder(tuple(points), {"calibration_images": len(calibration.files), "settings": settings})
    output = Path(args.output or f"{model.name}-cut{calibration.cut}-ladder.json")
    ladder.save(output)
    for point in points:
        _report(args, model, calibration, point)
    print(f"wrote {output} ({len(points)} points)")
    return 0


def _ladder_levels(text: str) -> list[tuple[int, float | None]]:
    """(levels, hysteresis or None) of each point of a --ladder value like 3@0.5,5,7."""
    points = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        levels, _, margin = part.partition("@")
        try:
            point = (int(levels), float(margin) if margin else None)
        except ValueError as exc:
            raise ConfigError(f"--ladder points are levels with an optional @hysteresis, like 3@0.5,5,7,9, got "
                              f"{part!r}.") from exc
        if not 2 <= point[0] <= 256 or (point[1] is not None and not 0.0 <= point[1] <= 1.0):
            raise ConfigError(f"--ladder point {part!r}: levels must be in 2..256 and hysteresis in [0, 1].")
        points.append(point)
    if not points:
        raise ConfigError(f"--ladder needs at least one point, like 3@0.5,5,7,9; got {text!r}.")
    return sorted(set(points), key=lambda p: (p[0], -(p[1] or 0.0)))


def _calibrated_profile(args: argparse.Namespace, model, calibration, levels: int, hysteresis: float | None = None,
                        *, weights: dict[str, tuple[float, ...]]):
    """Choose the clip range and quantizer for `levels` levels and measure the intra rate on the calibration set."""
    import numpy as np

    from splitinfer.codec import CodecProfile, Coder, default_coder, encode, parse_coder
    from splitinfer.dnn.calibration import choose_quantizer

    choice = choose_quantizer(
        model, calibration, levels=levels, kind=args.quantizer, lam=args.lam, weight_power=args.weight_power,
        clip=args.clip, percentile=args.percentile, symmetric=args.symmetric, scale=args.clip_scale,
    )
    coder = parse_coder(args.coder) or default_coder(choice.quantizer)
    # Calibration images are not consecutive frames: temporal profiles are measured as the intra frames they open with.
    intra_coder = default_coder(choice.quantizer) if coder is Coder.TEMPORAL_CONTEXTS else coder
    sizes = [sum(encode(t[0], choice.quantizer, coder=intra_coder).nbytes for t in kept.tensors.values())
             for kept in calibration.kept]
    figures = dict(choice.figures)
    figures["quantizer"] = {"kind": args.quantizer, "levels": levels, "lam": args.lam,
                            "weight_power": args.weight_power}
    if sizes:
        elements = sum(int(np.prod(s.shape)) for s in calibration.samples.values())
        figures["bytes_per_frame"] = float(np.mean(sizes))
        figures["bits_per_element"] = 8.0 * float(np.mean(sizes)) / elements
    return CodecProfile(choice.quantizer, coder=coder, model=model.name, cut=calibration.cut,
                        intra_period=args.intra_period, hysteresis=args.hysteresis if hysteresis is None else hysteresis,
                        rdo_lambda=args.rdo_lambda, rdo_weights=weights, figures=figures)


def _report(args: argparse.Namespace, model, calibration, profile) -> None:
    q, figures = profile.quantizer, profile.figures
    print(f"{model.name} cut {calibration.cut}: {q.levels} {args.quantizer} levels over [{q.clip_min:.4g}, "
          f"{q.clip_max:.4g}] ({figures['clip_method']}), coder {profile.coder.name}")
    if "bytes_per_frame" in figures:
        print(f"calibration set ({len(calibration.files)} images): {figures['bytes_per_frame']:.0f} bytes/frame, "
              f"{figures['bits_per_element']:.3f} bits/element, {figures.get('changes_per_image', float('nan')):.3f} "
              "results (detections, or top-1 classes) lost+added per image against the uncompressed model")
