"""The rate-accuracy study: our codec against HEVC of tiled tensors, JPEG of the input, and raw tensors.

For Yolo-Fastest-1.1-XL at several cuts (COCO-mini val: AP50 and its paired jackknife standard error,
detections lost/added against the unsplit model), on the shared video (lost/added against the unsplit
model; intra, temporal contexts, HEVC intra and low-delay inter) and for EfficientNet-Lite0 at two cuts
(ImageNet sample: top-1, paired difference and its standard error). Every rate is the size of real coded
bytes; encode/decode wall time per frame is recorded for orientation only (HEVC's includes ffmpeg start-up;
speed comparisons: bench/encoder_speed.py). Clip ranges and quantizers are designed on coco-mini/calib2017
(never the evaluation images); which images choose and which report: docs/PROTOCOL.md, bench/heldout.py.
Results go to a JSON file; `--report` turns it into plots and tables.

    python bench/rate_accuracy.py --out /tmp/rate_accuracy.json            # run (tens of minutes on 2 cores)
    python bench/rate_accuracy.py --out /tmp/rate_accuracy.json --report   # plots in docs/, tables on stdout
    python bench/rate_accuracy.py --parts video --video A.mp4 --video B.avi  # any videos (default: the shared one)
    python bench/rate_accuracy.py --parts images,classification --subset report  # a held-out half (bench/heldout.py)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common import DATA, REPO, bgr_to_input, calibration_histogram, input_to_bgr  # beside this script

DEFAULT_VIDEO = DATA / "video" / "one-by-one-person-detection.mp4"

YOLO = "yolo-fastest-1.1-xl"
EFFNET = "efficientnet-lite0"


@dataclass
class Point:
    """One codec setting measured on one data set."""

    part: str  # images | video | classification
    model: str
    cut: str
    family: str  # ours-uniform, ours-ecsq, ours-perchannel, hevc-intra, hevc-inter, jpeg, float16, uint8
    setting: str
    coder: str = ""
    bytes_per_frame: float = math.nan
    bits_per_element: float = math.nan
    accuracy: float = math.nan  # AP50 (detection) or top-1 (classification); NaN on the video
    accuracy_delta: float = math.nan
    accuracy_delta_se: float = math.nan
    lost: int = 0
    added: int = 0
    encode_ms: float = math.nan
    decode_ms: float = math.nan
    extra: dict = field(default_factory=dict)
    data: str = ""  # which data: a video's file name, or a held-out half ("selection", "report"); "" = the default


def _median_ms(seconds: Sequence[float]) -> float:
    return 1000.0 * statistics.median(seconds) if seconds else math.nan


# --------------------------------------------------------------------------------------------- inputs


@dataclass
class Sample:
    """One evaluation picture: key, network input, preprocessing info, unsplit results, heads per cut."""

    key: str
    x: object
    info: object
    reference: list  # unsplit results (detections at the evaluation threshold, or logits top-1)
    heads: dict = field(default_factory=dict)  # cut -> {name: (1, C, H, W) float32}


class Evaluator:
    """Runs tails / full models on a fixed set of pictures and scores results against truth and the unsplit model."""

    def __init__(self, model, frames: Sequence, *, annotations: Path | None = None, labels: dict | None = None,
                 live_threshold: float = 0.25) -> None:
        import torch

        from splitinfer.dnn.yolo_postprocess import EVAL_SCORE_THRESHOLD

        self.model = model
        self.data = ""  # label written into every Point (video file name or held-out half)
        self.live_threshold = live_threshold
        self.eval_threshold = EVAL_SCORE_THRESHOLD
        self.labels = labels
        self.coco = None
        self.ids: dict[str, int] = {}
        if annotations is not None:
            from splitinfer.dnn.evaluation import _load_coco

            self.coco, self.ids = _load_coco(annotations)
        self.samples: list[Sample] = []
        from tqdm import tqdm

        for frame in tqdm(frames, desc=f"reference outputs of {model.name}", file=sys.stderr, dynamic_ncols=True):
            if frame.image is None:
                continue
            x, info = model.preprocess(frame.image)
            with torch.no_grad():
                out = model.forward(x)
            self.samples.append(Sample(frame.key, x, info, self._results(out, info)))
        self._reference_scores = self._score_reference()

    # results ------------------------------------------------------------------------------------
    def _results(self, outputs, info) -> list:
        if self.model.task == "detection":
            return self.model.postprocess(outputs, info, score_threshold=self.eval_threshold)
        return [int(outputs[0].argmax())]

    def _live(self, results: list) -> list:
        return [d for d in results if d.score >= self.live_threshold]

    def _score_reference(self):
        if self.coco is not None:
            from splitinfer.dnn.eval_coco import PerImageAP, jackknife_se, to_coco_results

            self._category_ids = sorted(self.coco.getCatIds())
            self._image_ids = [self.ids[s.key] for s in self.samples]
            ref = PerImageAP(self.coco, to_coco_results(
                {self.ids[s.key]: s.reference for s in self.samples}, self._category_ids), self._image_ids)
            self.reference_ap50 = ref.ap()[1]
            self._ref_loo = ref.leave_one_out()[:, 1]
            self.reference_ap50_se = jackknife_se(self._ref_loo)
        if self.labels is not None:
            self._ref_correct = np.array([s.reference[0] == self.labels[s.key] for s in self.samples], float)
            self.reference_top1 = float(self._ref_correct.mean())
        return None

    def score(self, results: Sequence[list]) -> dict:
        """Accuracy (with its paired delta and SE) and lost/added against the unsplit model."""
        from splitinfer.dnn.eval_coco import PerImageAP, count_lost_added, jackknife_se, to_coco_results

        out: dict = {"lost": 0, "added": 0}
        if self.model.task == "detection":
            for sample, result in zip(self.samples, results):
                lost, added = count_lost_added(self._live(sample.reference), self._live(result))
                out["lost"] += lost
                out["added"] += added
        else:
            out["lost"] = out["added"] = int(sum(s.reference[0] != r[0] for s, r in zip(self.samples, results)))
        if self.coco is not None:
            ap = PerImageAP(self.coco, to_coco_results(
                {self.ids[s.key]: r for s, r in zip(self.samples, results)}, self._category_ids), self._image_ids)
            out["accuracy"] = ap.ap()[1]
            out["accuracy_delta"] = out["accuracy"] - self.reference_ap50
            out["accuracy_delta_se"] = jackknife_se(ap.leave_one_out()[:, 1] - self._ref_loo)
        if self.labels is not None:
            correct = np.array([r[0] == self.labels[s.key] for s, r in zip(self.samples, results)], float)
            diff = correct - self._ref_correct
            out["accuracy"] = float(correct.mean())
            out["accuracy_delta"] = float(diff.mean())
            out["accuracy_delta_se"] = float(diff.std(ddof=1) / math.sqrt(len(diff)))
        return out

    # running -------------------------------------------------------------------------------------
    def heads(self, cut: str) -> list[dict[str, np.ndarray]]:
        import torch

        split = self.model.split(cut)
        for s in self.samples:
            if cut not in s.heads:
                with torch.no_grad():
                    s.heads[cut] = {k: v.float().numpy() for k, v in split.head(s.x).items()}
        return [s.heads[cut] for s in self.samples]

    def run_tail(self, cut: str, tensors: Sequence[dict[str, np.ndarray]]) -> list[list]:
        import torch

        split = self.model.split(cut)
        results = []
        for s, t in zip(self.samples, tensors):
            with torch.no_grad():
                outputs = split.tail({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in t.items()})
            results.append(self._results(outputs, s.info))
        return results

    def run_full(self, inputs: Sequence) -> list[list]:
        import torch

        results = []
        for s, x in zip(self.samples, inputs):
            with torch.no_grad():
                results.append(self._results(self.model.forward(x), s.info))
        return results


# ------------------------------------------------------------------------------------------- codecs


def ours(evaluator: Evaluator, cut: str, quantizer, coders: Sequence, family: str, setting: str,
         part: str, *, temporal_period: Sequence[int] = (), hysteresis: Sequence[float] = (0.0,)) -> list[Point]:
    """Code every picture's tensors with `quantizer` and each coder (real bytes), run the tail once.

    Temporal coding runs once per intra period and hysteresis margin (codec.quantize_with_reference against
    the previous frame's levels); a margin above 0 changes the levels, so its tail runs again.
    """
    from splitinfer.codec import decode, encode

    heads = evaluator.heads(cut)
    elements = sum(v.size for v in heads[0].values())
    decoded = [{k: decode(encode(v[0], quantizer, coder=coders[0]))[None] for k, v in h.items()} for h in heads]
    scores = evaluator.score(evaluator.run_tail(cut, decoded))
    points = []
    for coder in coders:
        sizes, enc, dec = [], [], []
        for h in heads:
            total = 0
            for v in h.values():
                start = time.perf_counter()
                coded = encode(v[0], quantizer, coder=coder)
                enc.append(time.perf_counter() - start)
                start = time.perf_counter()
                decode(coded)
                dec.append(time.perf_counter() - start)
                total += coded.nbytes
            sizes.append(total)
        points.append(_point(part, evaluator, cut, family, setting, coder.name, sizes, elements, enc, dec, scores))
    for period in temporal_period:
        for margin in hysteresis:
            sizes, enc, dec, tensors = _temporal(heads, quantizer, period, margin)
            label = setting if margin == 0 else f"{setting} h={margin:g}"
            margin_scores = scores if margin == 0 else evaluator.score(evaluator.run_tail(cut, tensors))
            points.append(_point(part, evaluator, cut, family, label, f"TEMPORAL_CONTEXTS/K={period}", sizes,
                                 elements, enc, dec, margin_scores))
    return points


def _temporal(heads, quantizer, period: int, margin: float):
    """Intra every `period` frames, temporal contexts between, with the shipped sequence coder (codec.sequence, so the
    inter coder version is the one the edge sends); sizes, encode / decode seconds per frame, decoded tensors."""
    from splitinfer.codec import TemporalDecoder, TemporalEncoder

    encoder, decoder = TemporalEncoder(intra_period=period, hysteresis=margin), TemporalDecoder()
    sizes, enc, dec, tensors = [], [], [], []
    for n, h in enumerate(heads):
        frame = {name: v[0] for name, v in h.items()}
        start = time.perf_counter()
        coded, intra = encoder.encode_frame(frame, {name: quantizer for name in frame})
        enc.append(time.perf_counter() - start)
        start = time.perf_counter()
        levels = decoder.decode_frame(coded, None if intra else n - 1)
        dec.append(time.perf_counter() - start)
        decoder.commit(n, levels)
        sizes.append(sum(t.nbytes for t in coded.values()))
        tensors.append({name: ref.quantizer.dequantize(ref.levels)[None] for name, ref in levels.items()})
    return sizes, enc, dec, tensors


def _point(part, evaluator, cut, family, setting, coder, sizes, elements, enc, dec, scores) -> Point:
    mean = float(np.mean(sizes))
    return Point(part, evaluator.model.name, cut, family, setting, coder, mean, 8 * mean / elements,
                 scores.get("accuracy", math.nan), scores.get("accuracy_delta", math.nan),
                 scores.get("accuracy_delta_se", math.nan), scores["lost"], scores["added"],
                 _median_ms(enc), _median_ms(dec), data=evaluator.data)


def per_channel(evaluator: Evaluator, cut: str, sample, levels: int, scale: float, coder, part: str) -> Point:
    """Uniform levels with a clip range per channel (MSE-optimal on calibration), side information counted."""
    from splitinfer.codec import Quantizer, decode_indices, encode_indices
    from splitinfer.codec.clip_range import mse_optimal_range

    channels = int(sample.shape[0])
    quantizers = []
    for c in range(channels):
        chosen = mse_optimal_range(sample.values[sample.channels == c], levels, candidates=24)
        quantizers.append(Quantizer.uniform(chosen.clip_min * scale, chosen.clip_max * scale, levels))
    side = 4 * channels  # clip_min and clip_max per channel as float16
    heads = evaluator.heads(cut)
    (name,) = heads[0].keys()
    elements = heads[0][name].size
    sizes, enc, dec, decoded = [], [], [], []
    for h in heads:
        v = h[name][0]
        start = time.perf_counter()
        indices = np.stack([q.quantize(v[c]) for c, q in enumerate(quantizers)])
        payload = encode_indices(indices, levels, coder)
        enc.append(time.perf_counter() - start)
        start = time.perf_counter()
        back = decode_indices(payload, indices.shape, levels, coder)
        values = np.stack([q.dequantize(back[c]) for c, q in enumerate(quantizers)])
        dec.append(time.perf_counter() - start)
        sizes.append(len(payload) + side)
        decoded.append({name: values[None]})
    scores = evaluator.score(evaluator.run_tail(cut, decoded))
    return _point(part, evaluator, cut, "ours-perchannel", f"N={levels} s={scale}", coder.name, sizes, elements,
                  enc, dec, scores)


def hevc(evaluator: Evaluator, cut: str, clip: tuple[float, float], qp: int, keyint: int, part: str,
         bits: int = 8) -> Point:
    """HEVC of the channel-tiled tensors, all frames as one sequence (keyint 1: all intra)."""
    from baselines.hevc import hevc_roundtrip

    heads = evaluator.heads(cut)
    (name,) = heads[0].keys()
    elements = heads[0][name].size
    result = hevc_roundtrip([h[name][0] for h in heads], *clip, qp=qp, bits=bits, keyint=keyint)
    decoded = [{name: t[None]} for t in result.tensors]
    scores = evaluator.score(evaluator.run_tail(cut, decoded))
    n = len(heads)
    family = "hevc-intra" if keyint == 1 else "hevc-inter"
    mean = result.nbytes / n
    return Point(part, evaluator.model.name, cut, family, f"QP={qp} {bits}-bit keyint={keyint}", "x265 medium",
                 mean, 8 * mean / elements, scores.get("accuracy", math.nan), scores.get("accuracy_delta", math.nan),
                 scores.get("accuracy_delta_se", math.nan), scores["lost"], scores["added"],
                 1000 * result.encode_seconds / n, 1000 * result.decode_seconds / n,
                 {"clip": list(clip)}, data=evaluator.data)


def jpeg(evaluator: Evaluator, quality: int, part: str) -> Point:
    """JPEG of the picture the network sees (its input size), then the full model."""
    from baselines.jpeg import jpeg_roundtrip

    sizes, enc, dec, inputs = [], [], [], []
    for s in evaluator.samples:
        result = jpeg_roundtrip(input_to_bgr(evaluator.model, s.x), quality)
        sizes.append(result.nbytes)
        enc.append(result.encode_seconds)
        dec.append(result.decode_seconds)
        inputs.append(bgr_to_input(evaluator.model, result.image))
    scores = evaluator.score(evaluator.run_full(inputs))
    elements = int(np.prod(evaluator.samples[0].x.shape[1:]))
    return _point(part, evaluator, "input", "jpeg", f"Q={quality}", "libjpeg", sizes, elements, enc, dec, scores)


def raw(evaluator: Evaluator, cut: str, clip: tuple[float, float], kind: str, part: str) -> Point:
    from baselines.raw import float16_roundtrip, uint8_roundtrip

    heads = evaluator.heads(cut)
    sizes, enc, dec, decoded = [], [], [], []
    for h in heads:
        out, total = {}, 0
        for name, v in h.items():
            r = float16_roundtrip(v) if kind == "float16" else uint8_roundtrip(v, *clip)
            out[name] = r.tensor
            total += r.nbytes
            enc.append(r.encode_seconds)
            dec.append(r.decode_seconds)
        sizes.append(total)
        decoded.append(out)
    scores = evaluator.score(evaluator.run_tail(cut, decoded))
    elements = sum(v.size for v in heads[0].values())
    return _point(part, evaluator, cut, kind, kind, "none", sizes, elements, enc, dec, scores)


# ------------------------------------------------------------------------------------------- parts


def _uniform_grid(hist, levels_list, scales, symmetric):
    from splitinfer.codec import Quantizer
    from splitinfer.codec.clip_range import mse_optimal_range

    for levels in levels_list:
        base = mse_optimal_range(hist, levels, symmetric=symmetric and levels % 2 == 1)
        for s in scales:
            yield f"N={levels} s={s}", Quantizer.uniform(base.clip_min * s, base.clip_max * s, levels), (base, s)


def _ecsq_grid(hist, levels_list, scale, lambdas, powers, symmetric):
    from splitinfer.codec.clip_range import mse_optimal_range
    from splitinfer.codec.ecsq import design_ecsq

    for levels in levels_list:
        base = mse_optimal_range(hist, levels, symmetric=symmetric and levels % 2 == 1)
        for lam in lambdas:
            for power in powers:
                design = design_ecsq(hist, levels, base.clip_min * scale, base.clip_max * scale, lam=lam,
                                     weight_power=power)
                yield f"N={levels} s={scale} lam={lam} w={power}", design.quantizer


def _log(points: list[Point], out: Path) -> None:
    p = points[-1]
    print(f"  {p.part:5s} {p.model[:12]:12s} cut {p.cut:>8s} {p.family:16s} {p.setting:28s} {p.coder[:28]:28s} "
          f"{p.bytes_per_frame:9.0f} B {p.bits_per_element:6.3f} bpe acc {p.accuracy:.4f} ({p.accuracy_delta:+.4f}"
          f" +- {p.accuracy_delta_se:.4f}) lost {p.lost} added {p.added} enc {p.encode_ms:.2f} ms dec {p.decode_ms:.2f} ms",
          flush=True)
    out.write_text(json.dumps([asdict(q) for q in points], indent=1, allow_nan=True))


def study_images(points, out, args) -> None:
    from heldout import IMAGES_SALT, pick

    from splitinfer.codec import Coder
    from splitinfer.dnn import load_model
    from splitinfer.dnn.eval_images import image_files, iter_folder

    model = load_model(YOLO, weights=DATA / "models" / "yolo-fastest-1.1")
    folder = DATA / "coco-mini" / "val2017"
    names = pick([f.name for f in image_files(folder)], args.subset, IMAGES_SALT)
    evaluator = Evaluator(model, list(iter_folder(folder, names)),
                          annotations=DATA / "coco-mini" / "annotations" / "instances_val2017.json")
    evaluator.data = "" if args.subset == "all" else args.subset
    print(f"{YOLO} on {len(evaluator.samples)} val images: AP50 {evaluator.reference_ap50:.4f} "
          f"+- {evaluator.reference_ap50_se:.4f}", flush=True)
    coders = [Coder.BIN_CONTEXTS, Coder.NEIGHBOUR_CONTEXTS, Coder.SIGNED_NEIGHBOUR_CONTEXTS]
    for quality in args.jpeg:
        points.append(jpeg(evaluator, quality, "images"))
        _log(points, out)
    for cut in args.cuts:
        hist, sample = calibration_histogram(model, cut)
        for setting, quantizer, _ in _uniform_grid(hist, args.levels, args.scales, symmetric=True):
            points += ours(evaluator, cut, quantizer, coders, "ours-uniform", setting, "images")
            _log(points, out)
        if cut in args.ecsq_cuts:
            for setting, quantizer in _ecsq_grid(hist, args.ecsq_levels, args.ecsq_scale, args.lambdas, args.powers, True):
                points += ours(evaluator, cut, quantizer, coders, "ours-ecsq", setting, "images")
                _log(points, out)
            for levels in args.ecsq_levels:
                points.append(per_channel(evaluator, cut, sample, levels, args.ecsq_scale, Coder.SIGNED_NEIGHBOUR_CONTEXTS, "images"))
                _log(points, out)
        from splitinfer.codec.clip_range import mse_optimal_range

        wide = mse_optimal_range(hist, 256)
        clip = (wide.clip_min, wide.clip_max)
        for qp in args.qps:
            points.append(hevc(evaluator, cut, clip, qp, 1, "images"))
            _log(points, out)
        for kind in ("float16", "uint8"):
            points.append(raw(evaluator, cut, clip, kind, "images"))
            _log(points, out)


def _data_label(video: Path) -> str:
    return "" if video.resolve() == DEFAULT_VIDEO.resolve() else video.name


def study_video(points, out, args) -> None:
    from splitinfer.dnn import load_model
    from splitinfer.dnn.eval_images import iter_video

    model = load_model(YOLO, weights=DATA / "models" / "yolo-fastest-1.1")
    for video in args.video or [DEFAULT_VIDEO]:
        if not video.is_file():
            raise SystemExit(f"--video {video} is not a file: pass a video OpenCV can read "
                             "(the opencv-doc ones: apt-get install opencv-doc)")
        frames = list(iter_video(video, limit=args.video_frames))
        evaluator = Evaluator(model, frames)
        evaluator.data = _data_label(video)
        live = sum(len(evaluator._live(s.reference)) for s in evaluator.samples)
        print(f"video {video.name}: {len(evaluator.samples)} frames, {live} unsplit detections at score >= 0.25",
              flush=True)
        _study_one_video(model, evaluator, points, out, args)


def _study_one_video(model, evaluator: Evaluator, points, out, args) -> None:
    from splitinfer.codec import Coder
    from splitinfer.codec.clip_range import mse_optimal_range

    for quality in args.video_jpeg:
        points.append(jpeg(evaluator, quality, "video"))
        _log(points, out)
    cut = args.video_cut
    hist, _ = calibration_histogram(model, cut)
    coders = [Coder.SIGNED_NEIGHBOUR_CONTEXTS]
    for setting, quantizer, _ in _uniform_grid(hist, args.video_levels, args.video_scales, symmetric=True):
        points += ours(evaluator, cut, quantizer, coders, "ours-uniform", setting, "video",
                       temporal_period=args.periods, hysteresis=args.hysteresis)
        _log(points, out)
    for setting, quantizer in _ecsq_grid(hist, args.ecsq_levels, args.ecsq_scale, args.lambdas, args.powers, True):
        points += ours(evaluator, cut, quantizer, coders, "ours-ecsq", setting, "video", temporal_period=args.periods,
                       hysteresis=args.hysteresis)
        _log(points, out)
    wide = mse_optimal_range(hist, 256)
    for keyint in (1, args.periods[0]):
        for qp in args.qps:
            points.append(hevc(evaluator, cut, (wide.clip_min, wide.clip_max), qp, keyint, "video"))
            _log(points, out)


def study_classification(points, out, args) -> None:
    import csv

    from heldout import IMAGENET_SALT, pick

    from splitinfer.codec import Coder
    from splitinfer.codec.clip_range import mse_optimal_range
    from splitinfer.dnn import load_model
    from splitinfer.dnn.eval_images import iter_folder

    model = load_model(EFFNET)
    folder = DATA / "imagenet-sample"
    with (folder / "labels.csv").open(newline="") as stream:
        labels = {row["file"]: int(row["class_index"]) for row in csv.DictReader(stream)}
    evaluator = Evaluator(model, list(iter_folder(folder, pick(list(labels), args.subset, IMAGENET_SALT))),
                          labels=labels)
    evaluator.data = "" if args.subset == "all" else args.subset
    print(f"{EFFNET}: {len(evaluator.samples)} eval images, top-1 {evaluator.reference_top1:.3f}", flush=True)
    coders = [Coder.BIN_CONTEXTS, Coder.NEIGHBOUR_CONTEXTS, Coder.SIGNED_NEIGHBOUR_CONTEXTS]
    for quality in args.jpeg:
        points.append(jpeg(evaluator, quality, "classification"))
        _log(points, out)
    for cut in args.effnet_cuts:
        hist, _ = calibration_histogram(model, cut)  # coco-mini/calib2017: natural images, never evaluated on
        for setting, quantizer, _ in _uniform_grid(hist, args.effnet_levels, args.scales, symmetric=True):
            points += ours(evaluator, cut, quantizer, coders, "ours-uniform", setting, "classification")
            _log(points, out)
        for setting, quantizer in _ecsq_grid(hist, [args.effnet_levels[-1]], args.ecsq_scale, args.lambdas, [0.0, 2.0], True):
            points += ours(evaluator, cut, quantizer, coders, "ours-ecsq", setting, "classification")
            _log(points, out)
        wide = mse_optimal_range(hist, 256)
        for qp in args.qps:
            points.append(hevc(evaluator, cut, (wide.clip_min, wide.clip_max), qp, 1, "classification"))
            _log(points, out)
        for kind in ("float16", "uint8"):
            points.append(raw(evaluator, cut, (wide.clip_min, wide.clip_max), kind, "classification"))
            _log(points, out)


def study_mse(points, out, args) -> None:
    """ECSQ against uniform levels at equal rate on the tensor alone: real bytes vs MSE on the val images."""
    from splitinfer.codec import Coder, Quantizer, decode, encode
    from splitinfer.codec.clip_range import mse_optimal_range
    from splitinfer.codec.ecsq import design_ecsq
    from splitinfer.dnn import load_model
    from splitinfer.dnn.eval_images import iter_folder

    model = load_model(YOLO, weights=DATA / "models" / "yolo-fastest-1.1")
    evaluator = Evaluator(model, list(iter_folder(DATA / "coco-mini" / "val2017")))
    for cut in args.ecsq_cuts:
        hist, _ = calibration_histogram(model, cut)
        tensors = [next(iter(h.values()))[0] for h in evaluator.heads(cut)]
        candidates = []
        for levels in range(3, 17):
            base = mse_optimal_range(hist, levels, symmetric=levels % 2 == 1)
            candidates.append(("ours-uniform", f"N={levels}", Quantizer.uniform(base.clip_min, base.clip_max, levels)))
        for levels in args.ecsq_levels:
            base = mse_optimal_range(hist, levels, symmetric=levels % 2 == 1)
            for power in args.powers:
                for lam in (0.0, 0.1, 0.3, 1.0, 2.0, 3.0, 5.0, 10.0):
                    q = design_ecsq(hist, levels, base.clip_min, base.clip_max, lam=lam, weight_power=power).quantizer
                    candidates.append(("ours-ecsq", f"N={levels} lam={lam} w={power}", q))
        for family, setting, quantizer in candidates:
            sizes, errors = [], []
            for t in tensors:
                coded = encode(t, quantizer, coder=Coder.SIGNED_NEIGHBOUR_CONTEXTS)
                sizes.append(coded.nbytes)
                errors.append(float(np.mean((decode(coded) - t) ** 2)))
            mse = float(np.mean(errors))
            mean = float(np.mean(sizes))
            points.append(Point("mse", YOLO, cut, family, setting, "SIGNED_NEIGHBOUR_CONTEXTS", mean,
                                8 * mean / tensors[0].size, extra={"mse": mse}))
            _log(points, out)


def study_speed(points, out, args) -> None:
    """Encoder CPU time per frame, interleaved, on the val tensors at cut 80: bench/encoder_speed.py does it.

    (This part used to time x265 by the wall clock of ffmpeg calls, which counted process start-up and the
    machine's load; its figures are withdrawn, see docs/RESULTS.md.)
    """
    import encoder_speed

    encoder_speed.main(["--images", str(DATA / "coco-mini" / "val2017"), "--frames", str(args.speed_frames),
                        "--rounds", str(args.speed_rounds), "--match", "intra"])


# ------------------------------------------------------------------------------------------- report

OURS = ("ours-uniform", "ours-ecsq")
MARKERS = {"ours-uniform": "o", "ours-ecsq": "s", "ours-perchannel": "P", "hevc-intra": "^", "hevc-inter": "v",
           "jpeg": "D", "float16": "x", "uint8": "+"}


def _quality(p: Point, metric: str = "accuracy") -> float:
    """Higher is better. accuracy: AP50 / top-1; fidelity: minus the results lost + added against the
    unsplit model; the tensor-only comparison: -10 log10(MSE)."""
    if "mse" in p.extra:
        return -10.0 * math.log10(p.extra["mse"])
    if metric == "accuracy" and not math.isnan(p.accuracy):
        return p.accuracy
    return -float(p.lost + p.added)


def _best_coder(points: list[Point]) -> list[Point]:
    """Of the points that differ only by intra coder, the smallest (the codec picks its coder per profile)."""
    best: dict[tuple, Point] = {}
    for p in points:
        if p.coder.startswith("TEMPORAL"):
            continue
        key = (p.part, p.model, p.cut, p.family, p.setting)
        if key not in best or p.bytes_per_frame < best[key].bytes_per_frame:
            best[key] = p
    return list(best.values())


def _front(points: list[Point], metric: str = "accuracy") -> list[Point]:
    from bd_rate import pareto_front

    keep = set(pareto_front([(p.bytes_per_frame, _quality(p, metric)) for p in points]))
    return sorted((p for p in points if (p.bytes_per_frame, _quality(p, metric)) in keep),
                  key=lambda p: p.bytes_per_frame)


def _bd(anchor: list[Point], test: list[Point], metric: str = "accuracy") -> str:
    from bd_rate import bd_rate

    value = bd_rate([(p.bytes_per_frame, _quality(p, metric)) for p in anchor],
                    [(p.bytes_per_frame, _quality(p, metric)) for p in test])
    return "n/a (no overlap)" if value is None else f"{value:+.1f} %"


def _row(p: Point) -> str:
    acc = "" if math.isnan(p.accuracy) else f"{p.accuracy:.4f} ({p.accuracy_delta:+.4f} ± {p.accuracy_delta_se:.4f})"
    return (f"| {p.cut} | {p.family} | {p.setting} | {p.coder} | {p.bytes_per_frame:,.0f} | {p.bits_per_element:.3f} | "
            f"{acc} | {p.lost} / {p.added} | {p.encode_ms:.2f} | {p.decode_ms:.2f} |")


HEADER = ("| cut | codec | setting | coder | bytes/frame | bits/element | accuracy (Δ ± SE) | lost / added | "
          "wall enc ms | wall dec ms |\n|---|---|---|---|---|---|---|---|---|---|")
COLORS = {"ours-uniform": "C1", "ours-ecsq": "C2", "ours-perchannel": "C3", "hevc-intra": "C4", "hevc-inter": "C5",
          "jpeg": "C0", "float16": "C7", "uint8": "C6", "ours temporal K=30": "C8", "ours temporal K=300": "C9",
          "ours temporal K=30 hysteresis": "m", "ours temporal K=300 hysteresis": "k"}
METRICS = {"accuracy": "AP50 / top-1", "fidelity": "results lost + added vs unsplit"}


def _families(intra: list[Point], temporal: list[Point], cut: str) -> dict[str, list[Point]]:
    by_family: dict[str, list[Point]] = {}
    for p in intra:
        if p.cut in (cut, "input"):
            by_family.setdefault(p.family, []).append(p)
    for period in sorted({p.coder for p in temporal if p.cut == cut}, key=lambda c: int(c.split("=")[1])):
        chosen = [p for p in temporal if p.cut == cut and p.coder == period]
        by_family[f"ours temporal {period.split('/')[1]}"] = [p for p in chosen if " h=" not in p.setting]
        held = [p for p in chosen if " h=" in p.setting]
        if held:
            by_family[f"ours temporal {period.split('/')[1]} hysteresis"] = held
    return by_family


def write_report(points: list[Point], docs: Path) -> None:
    """Plots under `docs` and Markdown tables (Pareto fronts, BD-rates, speed) on stdout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    docs.mkdir(parents=True, exist_ok=True)
    mse_points = [p for p in points if p.part == "mse"]
    for cut in dict.fromkeys(p.cut for p in mse_points):
        uniform = [p for p in mse_points if p.cut == cut and p.family == "ours-uniform"]
        print(f"\n## ECSQ vs uniform levels on the tensor alone, cut {cut} (real bytes, MSE on val)\n")
        for power in sorted({p.setting.split("w=")[1] for p in mse_points if p.family == "ours-ecsq"}):
            ecsq = [p for p in mse_points if p.cut == cut and p.family == "ours-ecsq" and p.setting.endswith(f"w={power}")]
            print(f"- BD-rate at equal MSE of ECSQ (weight power {power}) against uniform levels: {_bd(uniform, ecsq)}")
    for part in ("images", "classification", "video"):
        for data in dict.fromkeys(p.data for p in points if p.part == part):
            chosen = [p for p in points if p.part == part and p.data == data]
            label = f"{part} ({data})" if data else part
            intra = _best_coder(chosen)
            temporal = [p for p in chosen if p.coder.startswith("TEMPORAL")]
            cuts = [c for c in dict.fromkeys(p.cut for p in intra) if c != "input"]
            metrics = ["fidelity"] if part == "video" else ["accuracy", "fidelity"]
            print(f"\n## {label}: {chosen[0].model}\n")
            figure, axes = plt.subplots(len(metrics), len(cuts), figsize=(4.2 * len(cuts), 3.4 * len(metrics)),
                                        squeeze=False, sharey="row")
            for column, cut in enumerate(cuts):
                by_family = _families(intra, temporal, cut)
                ours = [p for p in intra if p.cut == cut and p.family in OURS]
                print(f"### cut {cut}: Pareto fronts by {METRICS[metrics[0]]}\n\n{HEADER}")
                for group in by_family.values():
                    for p in _front(group, metrics[0]):
                        print(_row(p))
                print()
                for metric in metrics:
                    for family in ("hevc-intra", "hevc-inter", "jpeg"):
                        if by_family.get(family) and ours:
                            print(f"- BD-rate ({METRICS[metric]}) of our codec, intra, against {family}: "
                                  f"{_bd(by_family[family], ours, metric)}")
                        for name, group in by_family.items():
                            if name.startswith("ours temporal") and by_family.get(family):
                                print(f"- BD-rate ({METRICS[metric]}) of {name} against {family}: "
                                      f"{_bd(by_family[family], group, metric)}")
                    for name, group in by_family.items():
                        if name.endswith(" hysteresis") and by_family.get(name[: -len(" hysteresis")]):
                            print(f"- BD-rate ({METRICS[metric]}) of {name} against {name[: -len(' hysteresis')]} "
                                  f"(no hysteresis): {_bd(by_family[name[: -len(' hysteresis')]], group, metric)}")
                    uniform = by_family.get("ours-uniform", [])
                    for power in sorted({p.setting.split("w=")[1] for p in by_family.get("ours-ecsq", [])}):
                        ecsq = [p for p in by_family["ours-ecsq"] if p.setting.endswith(f"w={power}")]
                        print(f"- BD-rate ({METRICS[metric]}) of ECSQ with weight power {power} against uniform levels: "
                              f"{_bd(uniform, ecsq, metric)}")
                print()
                for row, metric in enumerate(metrics):
                    ax = axes[row][column]
                    for family, group in by_family.items():
                        color = COLORS.get(family, f"C{7 + len(family) % 3}")
                        front = _front(group, metric)
                        ax.plot([p.bytes_per_frame for p in group], [_quality(p, metric) for p in group],
                                MARKERS.get(family, "."), alpha=0.3, color=color)
                        ax.plot([p.bytes_per_frame for p in front], [_quality(p, metric) for p in front],
                                "-" + MARKERS.get(family, "."), label=family, color=color)
                    if ours:
                        elements = ours[0].bytes_per_frame * 8 / ours[0].bits_per_element
                        top = ax.secondary_xaxis("top", functions=(lambda b, e=elements: 8 * b / e,
                                                                   lambda v, e=elements: v * e / 8))
                        top.xaxis.set_major_formatter(FormatStrFormatter("%g"))
                        top.set_xlabel(f"bits per element ({int(elements)} at the cut)", fontsize=7)
                    ax.set_xscale("log")
                    ax.xaxis.set_minor_formatter(NullFormatter())
                    ax.set_title(f"cut {cut}", fontsize=9)
                    ax.set_xlabel("bytes per frame (real coded bytes)", fontsize=8)
                    ax.set_ylabel(METRICS[metric] if metric == "accuracy" else "- (lost + added)", fontsize=8)
                    ax.grid(alpha=0.3)
                    ax.legend(fontsize=6)
            figure.suptitle(f"{chosen[0].model}: {label}", fontsize=10)
            figure.tight_layout()
            suffix = "" if not data else "_" + "".join(c if c.isalnum() else "_" for c in data)
            figure.savefig(docs / f"rate_accuracy_{part}{suffix}.png", dpi=60)
            plt.close(figure)


def _csv(kind: Callable[[str], object]) -> Callable[[str], list]:
    return lambda text: [kind(v) for v in text.split(",") if v]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/rate_accuracy.json"))
    parser.add_argument("--parts", type=_csv(str), default=["images", "video", "classification"])
    parser.add_argument("--report", action="store_true", help="plots and tables from --out instead of running")
    parser.add_argument("--also", type=_csv(Path), default=[], help="more result files to merge into the report")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--cuts", type=_csv(str), default=["34", "59", "60", "80"])
    parser.add_argument("--ecsq-cuts", type=_csv(str), default=["60", "80"])
    parser.add_argument("--levels", type=_csv(int), default=[5, 7, 9, 11])
    parser.add_argument("--scales", type=_csv(float), default=[1.0, 1.5, 2.0])
    parser.add_argument("--ecsq-levels", type=_csv(int), default=[9])
    parser.add_argument("--ecsq-scale", type=float, default=1.5)
    parser.add_argument("--lambdas", type=_csv(float), default=[0.3, 1.0, 3.0])
    parser.add_argument("--powers", type=_csv(float), default=[0.0, 2.0])
    parser.add_argument("--qps", type=_csv(int), default=[22, 27, 32, 37, 42])
    parser.add_argument("--jpeg", type=_csv(int), default=[10, 20, 30, 50, 70, 90])
    parser.add_argument("--video", type=Path, action="append", default=None,
                        help="a video to study (repeat for several; default: the shared video)")
    parser.add_argument("--subset", choices=("all", "selection", "report"), default="all",
                        help="images and classification: all images or one held-out half (bench/heldout.py)")
    parser.add_argument("--video-frames", type=int, default=300)
    parser.add_argument("--video-cut", default="60")
    parser.add_argument("--video-levels", type=_csv(int), default=[5, 7, 9])
    parser.add_argument("--video-scales", type=_csv(float), default=[1.5, 2.0])
    parser.add_argument("--video-jpeg", type=_csv(int), default=[50, 70, 90])
    parser.add_argument("--periods", type=_csv(int), default=[30, 300])
    parser.add_argument("--hysteresis", type=_csv(float), default=[0.0],
                        help="temporal hysteresis margins in steps (video; 0 = plain quantize)")
    parser.add_argument("--speed-frames", type=int, default=79)
    parser.add_argument("--speed-rounds", type=int, default=7)
    parser.add_argument("--effnet-cuts", type=_csv(str), default=["blocks.2", "blocks.3"])
    parser.add_argument("--effnet-levels", type=_csv(int), default=[4, 6, 8])
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.report:
        # A setting measured again in a later file replaces the earlier measurement (no duplicate rows).
        merged = {(p["part"], p.get("data", ""), p["model"], p["cut"], p["family"], p["setting"], p["coder"]): p
                  for path in [args.out, *args.also] for p in json.loads(path.read_text())}
        write_report([Point(**p) for p in merged.values()], args.docs)
        return 0
    import torch

    torch.set_num_threads(1)  # the machine is shared; every codec here is single-threaded too
    points: list[Point] = []
    if args.out.exists():  # keep the other results; the parts run now replace their own on the same data
        subset = "" if args.subset == "all" else args.subset
        rerun = {(part, _data_label(v) if part == "video" else subset)
                 for part in args.parts for v in (args.video or [DEFAULT_VIDEO])}
        points = [Point(**p) for p in json.loads(args.out.read_text()) if (p["part"], p.get("data", "")) not in rerun]
    for part in args.parts:
        {"images": study_images, "video": study_video, "classification": study_classification,
         "mse": study_mse, "speed": study_speed}[part](points, args.out, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
