"""Rate control against fixed profiles: the rate achieved for a budget, and detection changes at equal rate.

For each video (at its native frame rate unless --fps decimates it; at most --seconds and --frames of it; a named
video or any path OpenCV reads), the head runs once per frame;
then the real edge pipeline codes the frames (services/edge/pipeline.py, rate control inside) and the
real decoder (codec.TemporalDecoder, as the cloud) decodes them for the tail. Detection changes are the
detections lost + added against the uncompressed model (services/fidelity.py). Every ladder point is
also run alone as a fixed profile; "fixed at equal rate" interpolates the changes of the two fixed points
around the controlled run's rate (linear in log rate), and the difference gets a standard error by block
jackknife over --block-frames frames (frames of a video are not independent).

The controller's per-frame planning (issue 19 item 4) was chosen among three variants on the shared video and
tree.avi by a rule written before the runs (docs/RESULTS.md, "Rate control planned per frame"); vtest.avi and
Megamind.avi report (Megamind's trace of the earlier controller showed the fault, so it is blind to the choice,
not to the diagnosis).

    python bench/rate_control.py --out /tmp/rate_control.json          # run (tens of minutes on 2 cores)
    python bench/rate_control.py --out /tmp/rate_control.json --report # tables for docs/RESULTS.md
    python bench/rate_control.py --out /tmp/rc2.json --fixed-from /tmp/rate_control.json  # controller changed
    python bench/rate_control.py --out /tmp/rc.json --videos ~/clip.mp4 vtest --frames 150  # any video, native fps
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from splitinfer.sample_data import shared_data_dir

DATA = shared_data_dir()
OPENCV_VIDEOS = Path("/usr/share/doc/opencv-doc/examples/data")
VIDEOS = {
    "shared": DATA / "video" / "one-by-one-person-detection.mp4",
    "vtest": OPENCV_VIDEOS / "vtest.avi",
    "Megamind": OPENCV_VIDEOS / "Megamind.avi",
    "tree": OPENCV_VIDEOS / "tree.avi",
}
SELECTION = ("shared", "tree")  # where the controller's planning was chosen; the others are held out
BUDGETS_KBPS = (32.0, 64.0, 128.0)
FALLBACK_FPS = 10.0  # a video that does not state its frame rate
BLOCK_FRAMES = 30


@dataclass
class Run:
    video: str
    setting: str  # "rate 64" or "fixed #3"
    frames: int
    seconds: float
    bytes: int
    kbps: float
    changes: list[int] = field(default_factory=list)  # per frame: lost + added
    dropped: int = 0
    switches: int = 0
    encode_ms: float = math.nan  # CPU time per frame of the edge's encode (rate control and trials included)
    fps: float = 10.0  # the frame rate the frames were coded at (runs before this field: decimated to 10)
    intra_period: int | None = None  # features: the ladder's intra period (None: runs before this field, 30)


def video_path(name: str) -> Path:
    """A named video (VIDEOS) or any path; SystemExit with what to do when it does not exist."""
    path = VIDEOS.get(name, Path(name).expanduser())
    if not path.is_file():
        hint = " (install opencv-doc for vtest, Megamind and tree)" if name in VIDEOS else ""
        raise SystemExit(f"video {name!r}: no file at {path}{hint}; name one of {', '.join(VIDEOS)} or give a path.")
    return path


def video_label(name: str) -> str:
    """The short name a video is reported under: its VIDEOS key, or the file's stem."""
    return name if name in VIDEOS else Path(name).stem


def native_fps(path: Path) -> float:
    """The frame rate the video file states (FALLBACK_FPS when it states none)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    capture.release()
    return fps if math.isfinite(fps) and 0 < fps <= 1000 else FALLBACK_FPS


def decimated_frames(path: Path, seconds: float, fps: float | None = None, frames: int | None = None):
    """(time_s, BGR image) at about `fps` frames per second (None: every frame), for at most `seconds` of the video
    and at most `frames` frames."""
    import cv2

    native = native_fps(path)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SystemExit(f"cannot open {path}: install opencv-doc (apt-get install opencv-doc) for the extra videos")
    index, next_due, count = 0, 0.0, 0
    while frames is None or count < frames:
        ok, image = capture.read()
        if not ok:
            break
        t = index / native
        index += 1
        if t > seconds:
            break
        if fps is None or t + 1e-6 >= next_due:
            yield t, image
            count += 1
            next_due += 1.0 / (fps or native)
    capture.release()


def heads_and_references(model, cut: str, path: Path, seconds: float, fps: float | None = None,
                         frames: int | None = None):
    """Per frame: the captured frame, the head's tensors, and the uncompressed model's detections."""
    import torch

    from splitinfer.services.edge.capture import CapturedFrame

    split = model.split(cut)
    out = []
    with torch.no_grad():
        for sequence, (t, image) in enumerate(decimated_frames(path, seconds, fps, frames)):
            x, info = model.preprocess(image)
            tensors = {k: v.numpy() for k, v in split.head(x).items()}
            reference = model.postprocess(split.tail({k: torch.from_numpy(v) for k, v in tensors.items()}), info)
            frame = CapturedFrame(sequence, image, time.time_ns(), time.monotonic_ns(), 0.0, t)
            out.append((frame, tensors, info, reference))
    return out


def run_pipeline(model, pipeline, frames, video: str, setting: str, fps: float) -> Run:
    """Code every frame with the edge pipeline, decode with the cloud's decoder, run the tail, count changes."""
    import torch

    from splitinfer.codec import TemporalDecoder
    from splitinfer.services.edge.client import HeadOutput
    from splitinfer.services.fidelity import compare
    from splitinfer.wire import coded_bytes, tensor_from_proto

    split = pipeline.split
    decoder = TemporalDecoder()
    run = Run(video, setting, 0, 0.0, 0, 0.0)
    encode_cpu = 0.0
    with torch.no_grad():
        for frame, tensors, info, reference in frames:
            started = time.process_time()
            message = pipeline.encode(HeadOutput(frame, tensors, {}))
            encode_cpu += time.process_time() - started
            if message is None:
                run.dropped += 1
                run.changes.append(len(reference))  # a dropped frame loses its detections
                continue
            coded = {t.name: tensor_from_proto(t) for t in message.tensors}
            reference_id = message.reference_frame_id if message.HasField("reference_frame_id") else None
            levels = decoder.decode_frame(coded, reference_id)
            decoder.commit(message.frame_id, levels)
            run.bytes += coded_bytes(message.tensors)  # payloads with their quantizers and headers
            decoded = {name: torch.from_numpy(ref.quantizer.dequantize(ref.levels).reshape(tensors[name].shape))
                       for name, ref in levels.items()}
            found = model.postprocess(split.tail(decoded), info)
            fidelity = compare(reference, found)
            run.changes.append(fidelity.lost + fidelity.added)
    run.frames = len(frames)
    run.seconds = len(frames) / fps
    run.fps = fps
    run.kbps = 8 * run.bytes / run.seconds / 1000
    run.encode_ms = 1000 * encode_cpu / max(len(frames), 1)
    if pipeline.rate is not None:
        run.switches = pipeline.rate.stats.switches
    return run


def measure(args) -> list[Run]:
    import torch

    from splitinfer.codec.ladder import CodecLadder
    from splitinfer.dnn import load_model
    from splitinfer.services.edge.pipeline import EdgePipeline
    from splitinfer.services.edge.rate_control import RateController
    from splitinfer.services.profiles import packaged_profile

    torch.set_num_threads(1)
    model = load_model("yolo-fastest-1.1-xl", weights=DATA / "models" / "yolo-fastest-1.1")
    ladder = CodecLadder.load(args.ladder or packaged_profile(model.name, "ladder"))
    elements = sum(math.prod(spec.shape) for spec in model.split(ladder.cut).tensors)
    runs: list[Run] = []
    reused = [Run(**r) for r in json.loads(args.fixed_from.read_text())] if args.fixed_from else []
    for name in args.videos:
        path, video = video_path(name), video_label(name)
        fps = args.fps or native_fps(path)
        frames = heads_and_references(model, ladder.cut, path, args.seconds, args.fps, args.frames)
        print(f"{video}: {len(frames)} frames at {fps:g} fps", flush=True)
        for budget in args.budgets:
            pipeline = EdgePipeline(model, ladder.points[-1], rate=RateController(ladder, elements, budget * 1000))
            runs.append(run_pipeline(model, pipeline, frames, video, f"rate {budget:g}", fps))
            _log(runs[-1], args.out, runs)
        if args.fixed_from:  # the fixed profiles do not depend on the controller: take them from an earlier run
            runs += [r for r in reused if r.video == video and r.setting.startswith("fixed")]
            _log(runs[-1], args.out, runs)
            continue
        for index, point in enumerate(ladder.points):
            runs.append(run_pipeline(model, EdgePipeline(model, point), frames, video, f"fixed #{index}", fps))
            _log(runs[-1], args.out, runs)
            if runs[-1].kbps > 1.5 * max(args.budgets):  # the points above cost more still: no use at these budgets
                break
    return runs


def _log(run: Run, out: Path, runs: list[Run]) -> None:
    print(f"  {run.video:9s} {run.setting:10s} {run.kbps:7.1f} kbit/s {run.bytes / run.frames:7.0f} B/frame "
          f"changes {sum(run.changes):5d} dropped {run.dropped} switches {run.switches} encode {run.encode_ms:.2f} ms",
          flush=True)
    out.write_text(json.dumps([asdict(r) for r in runs]))


def equal_rate_fixed(runs: list[Run], video: str, kbps: float) -> tuple[np.ndarray, str] | None:
    """Per-frame changes of the fixed profiles interpolated to `kbps` (None outside their range)."""
    fixed = sorted((r for r in runs if r.video == video and r.setting.startswith("fixed")), key=lambda r: r.kbps)
    for low, high in zip(fixed, fixed[1:]):
        if low.kbps <= kbps <= high.kbps:
            w = (math.log(kbps) - math.log(low.kbps)) / (math.log(high.kbps) - math.log(low.kbps))
            return (1 - w) * np.array(low.changes) + w * np.array(high.changes), f"{low.setting}/{high.setting}"
    return None


def block_se(differences: np.ndarray, block: int = BLOCK_FRAMES) -> float:
    """dnn/evaluation.py's block jackknife of a sum, at this bench's block (imported late: it brings torch)."""
    from splitinfer.dnn.evaluation import block_se as jackknife_of_sum

    return jackknife_of_sum(differences, block)


def report(runs: list[Run]) -> None:
    print("| video | set | budget kbit/s | achieved kbit/s | error | B/frame | changes | fixed at equal rate | "
          "difference ± SE | dropped | switches | encode ms/frame (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        if not run.setting.startswith("rate"):
            continue
        budget = float(run.setting.split()[1])
        error = 100 * (run.kbps - budget) / budget
        changes = np.array(run.changes, float)
        equal = equal_rate_fixed(runs, run.video, run.kbps)
        if equal is None:
            fixed_text, diff_text = "outside the ladder", "n/a"
        else:
            interpolated, between = equal
            diff = changes - interpolated
            fixed_text = f"{interpolated.sum():.0f} ({between})"
            diff_text = f"{diff.sum():+.0f} ± {block_se(diff):.0f}"
        where = "selection" if run.video in SELECTION else "held out"
        print(f"| {run.video} | {where} | {budget:g} | {run.kbps:.1f} | {error:+.1f} % | {run.bytes / run.frames:.0f} | "
              f"{changes.sum():.0f} | {fixed_text} | {diff_text} | {run.dropped} | {run.switches} | "
              f"{run.encode_ms:.2f} |")
    print()
    print("| video | fixed point | kbit/s | B/frame | changes |")
    print("|---|---|---|---|---|")
    for run in runs:
        if run.setting.startswith("fixed"):
            print(f"| {run.video} | {run.setting} | {run.kbps:.1f} | {run.bytes / run.frames:.0f} | {sum(run.changes)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the runs")
    parser.add_argument("--report", action="store_true", help="print the tables of an earlier run's JSON")
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS),
                        help=f"named videos ({', '.join(VIDEOS)}) or paths of any video OpenCV reads")
    parser.add_argument("--fps", type=float, default=None,
                        help="decimate to about this frame rate (default: each video's native rate)")
    parser.add_argument("--frames", type=int, default=None, help="at most this many frames of each video")
    parser.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS_KBPS))
    parser.add_argument("--seconds", type=float, default=20.0, help="at most this much of each video")
    parser.add_argument("--ladder", default=None, help="codec ladder (default: the one shipped with the model)")
    parser.add_argument("--fixed-from", type=Path, default=None,
                        help="take the fixed-profile runs from this earlier JSON (same ladder and videos) and run only "
                             "the rate-controlled ones")
    args = parser.parse_args(argv)
    if args.report:
        report([Run(**r) for r in json.loads(args.out.read_text())])
        return 0
    report(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
