"""Track-level fidelity (issue 21 item 5): tracks from each partition at a rate against the unsplit model's tracks.

For each video (named as in bench/rate_control.py, or a path; native frame rate, the first --frames frames) the
whole model's detections (DetectionsRoundtrip: what the detections partition delivers, equal to the unsplit model)
go through the cloud's Tracker (services/cloud/tracking.py, supervision ByteTrack): the reference tracks. Each
partition at each --rates value runs its real edge and cloud code in one process (services/edge/partitions.py, as
`splitinfer eval VIDEO --partition P --rate-kbps R` does), its detections (live threshold) through a fresh
Tracker. Compared (bench/track_metrics.py, IoU >= 0.5, same class; untracked boxes, track id 0, left out on both
sides): MOTA, IDF1, ID switches, and count errors on lines (the sum over both directions of |crossings - reference
crossings|): on a vertical line through the middle of the picture (full height), counted by the Tracker's own line
events, and summed over a grid of 14 lines at each eighth of the width and height (grid_lines), counted from the
stored tracks as the Tracker counts. The detections partition is the reference by construction: its
row runs the same detections through a second Tracker (a check that tracking is deterministic).

Spread: block jackknife over 30-frame blocks (leave one block out; MOTA from the per-frame counts of the whole run,
IDF1 re-paired each time); differences features - pixels at the same rate are paired on the same blocks.

    nice python bench/tracks.py --out /tmp/tracks.json --videos shared vtest Megamind --frames 210 --rates 64 32 128 256
    python bench/tracks.py --out /tmp/tracks.json --report    # the tables for docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import track_metrics as tm  # noqa: E402
from rate_control import decimated_frames, native_fps, video_label, video_path  # noqa: E402

BLOCK = 30
PARTITIONS = ("features", "pixels")


@dataclass
class TrackRun:
    video: str
    partition: str
    rate_kbps: float | None
    frames: list[list[list[float]]]  # per frame: [track id, class id, x1, y1, x2, y2] of each tracked detection
    crossings: dict[str, int] = field(default_factory=dict)  # direction -> count on the middle line
    bytes: int = 0
    fps: float = 0.0
    cpu_s: float = 0.0
    size: tuple[int, int] = (0, 0)  # the pictures' (width, height); (0, 0) in runs before this field: read the video

    def boxes(self) -> list[list[tm.Box]]:
        return [[tm.Box(int(t), int(c), x1, y1, x2, y2) for t, c, x1, y1, x2, y2 in frame] for frame in self.frames]


def _tracker(stream: str, width: int, height: int):
    from splitinfer.services.cloud.tracking import Tracker
    from splitinfer.services.cloud.zones import Line, StreamZones, ZonesConfig

    line = Line("middle", (width / 2, 0.0), (width / 2, float(height)))
    zones = ZonesConfig({stream: StreamZones(lines=(line,))})
    return Tracker(lambda: zones)


def track(model, candidate, path: Path, frames: int, fps: float, video: str, partition: str,
          rate: float | None) -> TrackRun:
    """Run `candidate` (a partition round trip) on the first `frames` frames and track its detections."""
    import torch

    from splitinfer.v1 import inference_pb2

    run = TrackRun(video, partition, rate, [], fps=fps)
    tracker = None
    started = time.process_time()
    with torch.no_grad():
        for n, (_, image) in enumerate(decimated_frames(path, float("inf"), None, frames)):
            height, width = image.shape[:2]
            tracker = tracker or _tracker(video, width, height)
            run.size = (width, height)
            outputs, info, nbytes = candidate(image)
            run.bytes += nbytes
            result = inference_pb2.InferenceResult(stream_id=video, frame_id=n + 1, detections=[
                inference_pb2.Detection(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, class_id=d.class_id, label=d.label,
                                        score=d.score) for d in model.postprocess(outputs, info)])
            result.capture.capture_time.FromNanoseconds(int(1e9 * (n + 1) / fps))
            for event in tracker.observe(result):
                if event.kind == inference_pb2.TRACK_EVENT_KIND_LINE_CROSSED:
                    run.crossings[event.direction] = run.crossings.get(event.direction, 0) + 1
            run.frames.append([[d.track_id, d.class_id, d.x1, d.y1, d.x2, d.y2] for d in result.detections
                               if d.track_id])
    run.cpu_s = time.process_time() - started
    return run


def measure(args) -> list[TrackRun]:
    import torch

    from splitinfer.dnn import load_model
    from splitinfer.services.edge.partitions import DetectionsRoundtrip, FeatureRoundtrip, PixelRoundtrip
    from splitinfer.services.pixels import pixel_settings_from_flags
    from splitinfer.services.profiles import resolve_ladder
    from splitinfer.sample_data import shared_data_dir

    torch.set_num_threads(1)
    model = load_model("yolo-fastest-1.1-xl", weights=shared_data_dir() / "models" / "yolo-fastest-1.1")
    ladder = resolve_ladder(model, None, None)
    runs: list[TrackRun] = []
    paths = {video_label(name): video_path(name) for name in args.videos}
    for video, path in paths.items():  # references first: every later run compares with one
        fps = native_fps(path)
        runs.append(track(model, DetectionsRoundtrip(model), path, args.frames, fps, video, "reference", None))
        runs.append(track(model, DetectionsRoundtrip(model), path, args.frames, fps, video, "detections", None))
        _log(runs, args.out)
    for rate in args.rates:  # the first rate for every video before the next rate: a cut-short run has it
        for video, path in paths.items():
            fps = native_fps(path)
            for partition in PARTITIONS:
                if partition == "features":
                    candidate = FeatureRoundtrip(model, ladder, rate, fps=fps)
                else:
                    settings = pixel_settings_from_flags(preset=None, crf=None, rate_kbps=rate, key_interval=None,
                                                         size=None)
                    candidate = PixelRoundtrip(model, settings, fps=fps)
                runs.append(track(model, candidate, path, args.frames, fps, video, partition, rate))
                _log(runs, args.out)
    return runs


def _log(runs: list[TrackRun], out: Path) -> None:
    run = runs[-1]
    kbps = 8 * run.bytes * run.fps / max(len(run.frames), 1) / 1000
    print(f"  {run.video:10s} {run.partition:10s} {run.rate_kbps or 0:5g} kbit/s -> {kbps:6.1f} kbit/s, "
          f"{len(run.frames)} frames, {sum(map(len, run.frames))} tracked boxes, crossings {run.crossings}, "
          f"{run.cpu_s:.0f} s CPU", flush=True)
    out.write_text(json.dumps([asdict(r) for r in runs]))


GRID = 8  # lines at each eighth of the picture's width (vertical) and height (horizontal): 14 lines


def grid_lines(width: float, height: float) -> list:
    """Lines across the whole picture at each 1/GRID of its width and height, so that tracks cross some of them
    wherever people walk (the one middle line of the Tracker run is crossed too rarely to measure)."""
    from splitinfer.services.cloud.zones import Line

    return ([Line(f"x{k}", (width * k / GRID, 0.0), (width * k / GRID, height)) for k in range(1, GRID)]
            + [Line(f"y{k}", (0.0, height * k / GRID), (width, height * k / GRID)) for k in range(1, GRID)])


def _size(run: TrackRun) -> tuple[int, int]:
    if run.size and run.size[0]:
        return run.size[0], run.size[1]
    import cv2

    capture = cv2.VideoCapture(str(video_path(run.video)))
    size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    capture.release()
    return size


def grid_counts(run: TrackRun, size: tuple[int, int]) -> list[list[tuple[int, int]]]:
    """Per grid line, per frame: (forward, backward) crossings."""
    boxes = run.boxes()
    return [tm.crossings_per_frame(boxes, line) for line in grid_lines(*size)]


def grid_error(run_counts: list[list[tuple[int, int]]], reference_counts: list[list[tuple[int, int]]],
               keep: list[bool] | None = None) -> int:
    """Count error summed over the grid's lines, over the frames where `keep` is true (all by default)."""
    total = 0
    for hyp, ref in zip(run_counts, reference_counts):
        if keep is not None:
            hyp = [c for c, k in zip(hyp, keep) if k]
            ref = [c for c, k in zip(ref, keep) if k]
        total += tm.count_error(ref, hyp)
    return total


@dataclass
class Scores:
    """One run against its video's reference: figures and their block-jackknife leave-one-out values."""

    mota: float
    idf1: float
    switches: int
    count_error: int
    mota_loo: list[float]
    idf1_loo: list[float]
    switches_per_block: list[int]
    kbps: float
    grid_crossings: int = 0  # the reference's crossings of the grid's lines
    grid_error: int = 0
    grid_error_loo: list[float] = field(default_factory=list)


def score(run: TrackRun, reference: TrackRun, block: int = BLOCK) -> Scores:
    ref, hyp = reference.boxes(), run.boxes()
    counts = tm.clear_mot(ref, hyp)
    tables = tm.identity_tables(ref, hyp, block)
    error = sum(abs(run.crossings.get(d, 0) - reference.crossings.get(d, 0)) for d in ("forward", "backward"))
    size = _size(reference)
    ref_grid, run_grid = grid_counts(reference, size), grid_counts(run, size)
    n = len(ref)
    loo = [grid_error(run_grid, ref_grid, [not (start <= i < start + block) for i in range(n)])
           for start in range(0, n, block)]
    return Scores(tm.mota(counts), tm.idf1(tables), sum(c.switches for c in counts), error,
                  tm.mota_leave_one_out(counts, block), tm.idf1_leave_one_out(tables),
                  [sum(c.switches for c in part) for part in tm.blocks(counts, block)],
                  8 * run.bytes * run.fps / max(len(run.frames), 1) / 1000,
                  sum(f + b for line in ref_grid for f, b in line), grid_error(run_grid, ref_grid), loo)


def _switch_se(per_block: list[int] | list[float]) -> float:
    """SE of a total over blocks (jackknife of a sum, closed form)."""
    import numpy as np

    values = np.asarray(per_block, dtype=float)
    return float(values.std(ddof=1) * np.sqrt(len(values))) if len(values) > 1 else float("nan")


def report(runs: list[TrackRun]) -> str:
    references = {r.video: r for r in runs if r.partition == "reference"}
    lines = ["| video | partition | rate kbit/s | achieved kbit/s | MOTA ± SE | IDF1 ± SE | ID switches ± SE | "
             "middle line crossings (fwd/back; reference) | count error | grid: reference crossings | grid count error ± SE |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    scored = {}
    for run in runs:
        if run.partition == "reference":
            continue
        reference = references[run.video]
        s = scored[(run.video, run.partition, run.rate_kbps)] = score(run, reference)
        crossings = (f"{run.crossings.get('forward', 0)}/{run.crossings.get('backward', 0)}; "
                     f"{reference.crossings.get('forward', 0)}/{reference.crossings.get('backward', 0)}")
        rate = "any" if run.rate_kbps is None else f"{run.rate_kbps:g}"
        lines.append(f"| {run.video} | {run.partition} | {rate} | {s.kbps:.1f} | {s.mota:.3f} ± "
                     f"{tm.jackknife_se(s.mota_loo):.3f} | {s.idf1:.3f} ± {tm.jackknife_se(s.idf1_loo):.3f} | "
                     f"{s.switches} ± {_switch_se(s.switches_per_block):.1f} | {crossings} | {s.count_error} | "
                     f"{s.grid_crossings} | {s.grid_error} ± {tm.jackknife_se(s.grid_error_loo):.1f} |")
    lines += ["", "| video | rate kbit/s | MOTA features - pixels ± SE | IDF1 features - pixels ± SE | "
              "ID switches features - pixels ± SE |", "|---|---|---|---|---|"]
    pooled: dict[float, list[tuple[float, float, float, float, float, float]]] = {}
    for (video, partition, rate), f in scored.items():
        p = scored.get((video, "pixels", rate))
        if partition != "features" or p is None:
            continue
        d_mota = [a - b for a, b in zip(f.mota_loo, p.mota_loo)]
        d_idf1 = [a - b for a, b in zip(f.idf1_loo, p.idf1_loo)]
        d_sw = [a - b for a, b in zip(f.switches_per_block, p.switches_per_block)]
        row = (f.mota - p.mota, tm.jackknife_se(d_mota), f.idf1 - p.idf1, tm.jackknife_se(d_idf1),
               float(f.switches - p.switches), _switch_se(d_sw))
        pooled.setdefault(rate, []).append(row)
        lines.append(f"| {video} | {rate:g} | {row[0]:+.3f} ± {row[1]:.3f} | {row[2]:+.3f} ± {row[3]:.3f} | "
                     f"{row[4]:+.0f} ± {row[5]:.1f} |")
    for rate, rows in pooled.items():  # videos are independent: the mean's SE from theirs
        if len(rows) < 2:
            continue
        mean = [sum(r[k] for r in rows) / len(rows) for k in range(6)]
        se = [(sum(r[k] ** 2 for r in rows)) ** 0.5 / len(rows) for k in range(6)]
        lines.append(f"| mean of {len(rows)} videos | {rate:g} | {mean[0]:+.3f} ± {se[1]:.3f} | "
                     f"{mean[2]:+.3f} ± {se[3]:.3f} | {mean[4]:+.1f} ± {se[5]:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON of the runs (written after each run)")
    parser.add_argument("--report", action="store_true", help="print the tables of an earlier run and exit")
    parser.add_argument("--videos", nargs="+", default=["shared", "vtest", "Megamind"],
                        help="named videos (bench/rate_control.py) or paths")
    parser.add_argument("--frames", type=int, default=210, help="the first this many frames of each video")
    parser.add_argument("--rates", nargs="+", type=float, default=[64.0, 32.0, 128.0, 256.0],
                        help="kbit/s, in the order run (every video at the first before the second)")
    args = parser.parse_args(argv)
    runs = ([TrackRun(**r) for r in json.loads(args.out.read_text())] if args.report else measure(args))
    print(report(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
