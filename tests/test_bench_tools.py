"""The measuring tools issue 19 relies on: bench/rate_control.py reads any video at its native frame rate,
bench/rate_accuracy.py's temporal coding is the shipped coder's, bench/baselines/pixel_video.py codes and decodes
whole clips (one picture back per picture in)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import shared_path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def _clip(folder: Path, fps: float, frames: int = 12) -> Path:
    """A short MJPG clip of the shared video at `fps` (the frame rate its header states)."""
    capture = cv2.VideoCapture(str(shared_path("video", "one-by-one-person-detection.mp4")))
    path = folder / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (160, 96))
    for _ in range(frames):
        ok, image = capture.read()
        assert ok
        writer.write(cv2.resize(image, (160, 96)))
    writer.release()
    return path


def test_rate_control_reads_any_video_path_at_its_native_frame_rate(tmp_path: Path) -> None:
    rate_control = _bench("rate_control")
    path = _clip(tmp_path, 25.0)
    assert rate_control.video_path(str(path)) == path
    assert rate_control.video_label(str(path)) == "clip"
    assert rate_control.native_fps(path) == pytest.approx(25.0)
    times = [t for t, _ in rate_control.decimated_frames(path, seconds=10.0)]
    assert times == pytest.approx([i / 25.0 for i in range(12)])  # every frame, at the file's rate
    assert len(list(rate_control.decimated_frames(path, seconds=10.0, frames=5))) == 5
    decimated = [t for t, _ in rate_control.decimated_frames(path, seconds=10.0, fps=12.5)]
    assert decimated == pytest.approx([i / 12.5 for i in range(6)])  # --fps still decimates


def test_rate_control_names_a_missing_video_and_what_to_give_instead(tmp_path: Path) -> None:
    rate_control = _bench("rate_control")
    with pytest.raises(SystemExit, match="no file at .*give a path"):
        rate_control.video_path(str(tmp_path / "absent.mp4"))


def test_rate_accuracy_temporal_coding_is_the_shipped_inter_coder() -> None:
    from splitinfer.codec import Coder, Quantizer, TemporalEncoder
    from splitinfer.codec.entropy import INTER_VERSION

    rate_accuracy = _bench("rate_accuracy")
    quantizer = Quantizer.uniform(0.0, 4.0, 6)
    base = np.random.default_rng(0).gamma(1.0, 1.0, (1, 8, 20, 20)).astype(np.float32)
    heads = [{"t": base + 0.02 * i} for i in range(4)]
    sizes, _, _, tensors = rate_accuracy._temporal(heads, quantizer, 3, 0.1)
    encoder = TemporalEncoder(intra_period=3, hysteresis=0.1)
    shipped = [encoder.encode_frame({"t": h["t"][0]}, {"t": quantizer})[0]["t"] for h in heads]
    assert [t.coder for t in shipped] == [Coder.NEIGHBOUR_CONTEXTS, Coder.TEMPORAL_CONTEXTS,
                                          Coder.TEMPORAL_CONTEXTS, Coder.NEIGHBOUR_CONTEXTS]
    assert shipped[1].coder_version == INTER_VERSION
    assert sizes == [t.nbytes for t in shipped]
    assert tensors[2]["t"].shape == (1, 8, 20, 20)


@pytest.mark.parametrize("codec, passes", [("libx264", 2), ("libx265", 1)])
def test_pixel_baseline_codes_and_decodes_a_whole_clip(codec: str, passes: int) -> None:
    pytest.importorskip("av", reason="PyAV (the dev extra) codes the pixel baselines")
    pixel_video = _bench("baselines.pixel_video")
    capture = cv2.VideoCapture(str(shared_path("video", "one-by-one-person-detection.mp4")))
    pictures = [cv2.resize(capture.read()[1], (128, 96)) for _ in range(10)]
    clip = pixel_video.code_clip(pictures, codec=codec, preset="veryfast", kbps=64, fps=10.0, keyint=None,
                                 passes=passes)
    assert len(clip.pictures) == len(pictures) and clip.pictures[0].shape == (96, 128, 3)
    assert clip.bytes > 0 and clip.encode_cpu_s > 0
    assert np.abs(clip.pictures[5].astype(int) - pictures[5]).mean() < 40  # the same scene comes back


def test_pixel_baseline_refuses_an_unknown_codec() -> None:
    pixel_video = _bench("baselines.pixel_video")
    with pytest.raises(ValueError, match="use one of libx264, libx265"):
        pixel_video.encode_clip([np.zeros((8, 8, 3), np.uint8)], codec="vp9", preset="medium", kbps=64, fps=10,
                                keyint=None)


def _auto_result(detections_kbps: float) -> dict:
    """A measured video as bench/auto_partition.py stores it: three frames, costs, budgets, runs and auto's choices."""
    auto_partition = _bench("auto_partition")
    costs = {"pixels": 3.0, "features": 20.0, "detections": 40.0}
    runs = {
        "detections": auto_partition.PartitionRun("detections", None, [0, 0, 0], 90, detections_kbps, 40.0),
        "pixels 32": auto_partition.PartitionRun("pixels", 32.0, [2, 3, 1], 1200, 32.0, 3.0),
        "features 32": auto_partition.PartitionRun("features", 32.0, [1, 0, 1], 1200, 32.0, 20.0),
    }
    choices = {"whole model|all|32": "detections", "whole model|pixels,features|32": "features 32",
               "head|all|32": "pixels 32", "head|pixels,features|32": "pixels 32",
               "pixels only|all|32": "pixels 32", "pixels only|pixels,features|32": None}
    return {"video": "clip", "fps": 10.0, "frames": 3, "costs": costs,
            "budgets": auto_partition.budgets_from_costs(costs), "choices": choices,
            "runs": {key: vars(run) for key, run in runs.items()}}


def test_auto_bench_compares_auto_with_the_best_partition_that_fits_both_budgets() -> None:
    auto_partition = _bench("auto_partition")
    result = _auto_result(detections_kbps=24.0)
    assert result["budgets"] == {"whole model": 80.0, "head": 30.0, "pixels only": 11.5}
    whole = auto_partition.compare_cell(result, "whole model", None, 32.0)
    assert [r.partition for r in whole["singles"]] == ["pixels", "features", "detections"]
    assert whole["best"].partition == "detections" and whole["difference"] == 0 and whole["within"]
    head = auto_partition.compare_cell(result, "head", None, 32.0)  # the whole model does not fit the edge
    assert [r.partition for r in head["singles"]] == ["pixels", "features"]
    assert head["best"].partition == "features" and head["difference"] == 4 and not head["within"]
    assert auto_partition.compare_cell(result, "pixels only", "pixels,features", 32.0)["auto"] is None
    table = auto_partition.report([result])
    assert ("| clip | head | all | 32 | pixels 6 ± nan, features 2 ± nan | pixels 32 (32.0 kbit/s): 6 | "
            "+4 ± nan (vs features) | **no** |") in table


def test_auto_bench_counts_detections_over_the_uplink_as_not_fitting() -> None:
    auto_partition = _bench("auto_partition")
    cell = auto_partition.compare_cell(_auto_result(detections_kbps=40.0), "whole model", None, 32.0)
    assert "detections" not in [r.partition for r in cell["singles"]]
    assert cell["over_uplink"]  # auto chose detections, which sent 40 kbit/s on a 32 kbit/s uplink
    assert "**no**: over the uplink (40.0 kbit/s)" in auto_partition.report([_auto_result(detections_kbps=40.0)])


def test_auto_bench_derives_the_scene_probes_choice_from_the_first_frames_of_the_runs() -> None:
    """A K-frame probe is the first K frames of each partition's run: detections that send 40 kbit/s there do not
    fit 32 kbit/s, whatever the shipped curves (5.5 kbit/s) say; K = 0 is the curves alone."""
    from splitinfer.services.edge.auto_partition import load_curves

    auto_partition = _bench("auto_partition")
    result = _auto_result(detections_kbps=40.0)
    result["runs"]["detections"]["frame_bytes"] = [500, 500, 500]  # 40 kbit/s at 10 frames/s
    result["runs"]["pixels 32"]["frame_bytes"] = result["runs"]["features 32"]["frame_bytes"] = [400, 400, 400]
    curves = load_curves("yolo-fastest-1.1-xl", None)
    assert auto_partition.simulated_choices(result, curves, 0)["whole model|all|32"] == "detections"
    probed = auto_partition.simulated_choices(result, curves, 3)
    assert probed["whole model|all|32"] == "features 32"  # fewer changes than pixels on the probe: 2 against 6
    assert probed["pixels only|all|32"] == "pixels 32"
    table = auto_partition.sweep([dict(result, probe_frames=3, choices=probed)], curves, [0, 3])
    assert "| clip | 0 | 5 of 6 | whole model/all/32: detections -2 ± nan vs features (over the uplink) |" in table
    assert "| clip | 3 |" in table and "does not reproduce" not in table


def test_auto_bench_refuses_edge_costs_that_leave_no_head_only_budget() -> None:
    auto_partition = _bench("auto_partition")
    with pytest.raises(SystemExit, match="not ordered pixels < features < detections"):
        auto_partition.budgets_from_costs({"pixels": 3.0, "features": 45.0, "detections": 40.0})


@pytest.mark.slow
def test_auto_bench_counts_changes_and_bytes_as_splitinfer_eval_does() -> None:
    """The bench computes the references once per video; its per-frame counts must add up to eval's report."""
    pytest.importorskip("av", reason="PyAV codes the pixels partition")
    from splitinfer.codec.ladder import CodecLadder
    from splitinfer.dnn import load_model
    from splitinfer.dnn.eval_images import iter_source
    from splitinfer.dnn.evaluation import evaluate_detection
    from splitinfer.services.profiles import packaged_profile

    auto_partition = _bench("auto_partition")
    model = load_model("yolo-fastest-1.1-xl", weights=shared_path("models", "yolo-fastest-1.1"))
    ladder = CodecLadder.load(packaged_profile(model.name, "ladder"))
    video = shared_path("video", "one-by-one-person-detection.mp4")
    clip = auto_partition.references(model, iter_source(video, limit=8), "60")
    for partition, rate in (("pixels", 16.0), ("features", 16.0)):
        candidate = auto_partition.round_trip(model, ladder, partition, rate, 10.0)
        run = auto_partition.evaluate_frames(model, clip, candidate, 10.0, partition, rate)
        eval_report = evaluate_detection(model, iter_source(video, limit=8), cut="60",
                                         candidate=auto_partition.round_trip(model, ladder, partition, rate, 10.0))
        assert sum(run.changes) == eval_report.detections_lost + eval_report.detections_added
        assert run.bytes == round(eval_report.bytes_per_frame * eval_report.images)
        assert len(run.changes) == eval_report.images == 8
        if partition == "pixels":
            assert sum(run.changes) > 0  # 16 kbit/s of H.264 changes detections: the counts are compared, not zeros


def _shaped_run(partitions: list[str], stderr: str):
    """An EdgeRun as bench/shaped_link.py reads it: 11 frames 100 ms apart, answered in 50 ms but the last in 450 ms,
    100 payload bytes each, the sender's CPU 40 ms per result."""
    from tests.services.link_processes import EdgeRun

    records = [{"frame_id": str(i), "capture": {"capture_monotonic_ns": str(1_000_000_000 + i * 100_000_000)},
                "latency_s": 0.45 if i == 10 else 0.05, "payload_bytes": 100,
                "origin": {"partition": f"PARTITION_{partitions[i].upper()}"}} for i in range(11)]
    return EdgeRun(results=records, returncode=0, stderr=stderr, cpu_s=[i * 0.04 for i in range(11)],
                   counters={"grabbed": 11, "dropped": 2, "reconnects": 0, "lost_on_reconnect": 0})


def test_shaped_link_bench_summarizes_a_runs_steady_part_and_the_partitions_auto_ran() -> None:
    shaped_link = _bench("shaped_link")
    run = _shaped_run(["features"] * 7 + ["pixels"] * 4,
                      "auto partition: switching from features to pixels\nauto partition: 1 switch(es); ended with x")
    # The first frame was captured before the first result arrived: the steady part is frames 1..10, 1.35 s from
    # the first's capture to the last's arrival; the last frame's 450 ms makes the p95, the max and a 0.5 s gap.
    cells = shaped_link.summarize(run, 0.11, 0.0) + shaped_link.partition_cells(run, 0.0)
    assert cells == ["7.4", "50", "450", "90 +- 40", "450", "0.5", "100", "5", "11 / 11", "2", "0", "40", "10",
                     "features 6, pixels 4", "1"]
    assert shaped_link.wire_cell(3_300, run) == "-"  # no `done:` line: the frames sent are not known
    run.counters["sent"] = 11
    cells.append(shaped_link.wire_cell(3_300, run))
    assert cells[-1] == "300" and len(cells) + 4 == len(shaped_link.HEADER)


def test_shaped_link_bench_marks_a_fixed_partition_and_a_run_without_steady_frames() -> None:
    shaped_link = _bench("shaped_link")
    run = _shaped_run(["detections"] * 11, "done: 11 frames grabbed")
    assert shaped_link.partition_cells(run, 0.0) == ["detections 10", "-"]
    short = shaped_link.summarize(run, 0.11, 60.0) + shaped_link.partition_cells(run, 60.0)
    assert short[0] == "0" and short[-2:] == ["-", "-"] and len(short) + 5 == len(shaped_link.HEADER)
