"""The accuracy harness: COCO AP as pycocotools computes it, jackknife errors, fidelity, codec rates, bad images."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitinfer.cli import main
from splitinfer.codec import CodecProfile, Quantizer, encode
from splitinfer.dnn import Detection
from splitinfer.dnn.eval_coco import PerImageAP, count_lost_added, jackknife_se, to_coco_results
from splitinfer.dnn.eval_codec import compress_roundtrip
from splitinfer.dnn.eval_images import iter_folder, iter_source, read_image
from splitinfer.dnn.evaluation import coco_annotations_for, evaluate_classification, evaluate_detection
from tests.conftest import shared_path

PROFILE = CodecProfile(Quantizer.uniform(-1.0, 6.0, 8))


@pytest.fixture(scope="module")
def val_folder():
    return shared_path("coco-mini", "val2017")


@pytest.fixture(scope="module")
def coco_gt(val_folder):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(coco_annotations_for(val_folder)))


@pytest.fixture(scope="module")
def some_detections(fastest_xl, val_folder, coco_gt):
    ids = {img["file_name"]: img["id"] for img in coco_gt.dataset["images"]}
    out = {}
    for frame in iter_source(val_folder, limit=12):
        x, info = fastest_xl.preprocess(frame.image)
        out[ids[frame.key]] = fastest_xl.postprocess(fastest_xl(x), info, score_threshold=0.005)
    return out


def _cocoeval_stats(coco_gt, results, image_ids):
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[0], evaluator.stats[1]


def test_per_image_ap_equals_pycocotools_on_all_and_on_leave_one_out_subsets(coco_gt, some_detections):
    categories = sorted(coco_gt.getCatIds())
    results = to_coco_results(some_detections, categories)
    ids = sorted(some_detections)
    fast = PerImageAP(coco_gt, results, ids)
    assert fast.ap() == pytest.approx(_cocoeval_stats(coco_gt, results, ids), abs=1e-12)
    loo = fast.leave_one_out()
    for left_out in (0, 5):
        subset = [i for n, i in enumerate(ids) if n != left_out]
        sub_results = [r for r in results if r["image_id"] in subset]
        assert tuple(loo[left_out]) == pytest.approx(_cocoeval_stats(coco_gt, sub_results, subset), abs=1e-12)


@given(st.lists(st.floats(-10, 10), min_size=2, max_size=40))
def test_jackknife_of_a_mean_is_the_standard_error_of_the_mean(values):
    x = np.asarray(values)
    loo = (x.sum() - x) / (len(x) - 1)
    assert jackknife_se(loo) == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)), rel=1e-6, abs=1e-9)


def _det(x1, y1, x2, y2, class_id=0, score=0.9):
    return Detection(x1, y1, x2, y2, class_id, str(class_id), score)


def test_lost_and_added_detections_match_by_class_and_iou():
    reference = [_det(0, 0, 10, 10), _det(20, 20, 30, 30), _det(0, 0, 10, 10, class_id=1)]
    other = [_det(1, 1, 10, 10), _det(50, 50, 60, 60), _det(0, 0, 10, 10, class_id=2)]
    assert count_lost_added(reference, other) == (2, 2)
    assert count_lost_added(reference, reference) == (0, 0)
    assert count_lost_added([], other) == (0, 3)


def test_without_a_codec_the_compressed_figures_equal_the_reference(fastest_xl, val_folder):
    report = evaluate_detection(fastest_xl, iter_source(val_folder, limit=6), cut="22",
                                annotations=coco_annotations_for(val_folder))
    assert report.images == 6 and report.codec == "none"
    assert report.ap50 == report.ap50_ref and report.ap50_delta == 0.0
    assert report.fidelity_ap50 == 1.0 and report.detections_lost == report.detections_added == 0
    assert report.bits_per_element == 32.0 and report.bytes_per_frame == 4 * 64 * 80 * 80


def test_codec_rates_are_the_real_coded_bytes(fastest_xl, val_folder):
    frames = list(iter_source(val_folder, limit=4))
    report = evaluate_detection(fastest_xl, frames, cut="22", profile=PROFILE,
                                annotations=coco_annotations_for(val_folder), codec_name="uniform-8")
    split = fastest_xl.split("22")
    coded = [encode(split.head(fastest_xl.preprocess(f.image)[0])["layer22"][0].numpy(), PROFILE.quantizer).nbytes
             for f in frames]
    assert report.bytes_per_frame == pytest.approx(np.mean(coded))
    assert report.bits_per_element == pytest.approx(8 * np.mean(coded) / (64 * 80 * 80))
    assert 0.1 < report.bits_per_element < 3.0
    assert 0.0 <= report.fidelity_ap50 <= 1.0 and report.ap50_delta_se >= 0.0
    assert report.ap50_delta == pytest.approx(report.ap50 - report.ap50_ref)


def test_compress_roundtrip_decodes_every_tensor(fastest_xl):
    x, _ = fastest_xl.preprocess(read_image(shared_path("images", "dog.jpg")))
    sent = {k: v[0].numpy() for k, v in fastest_xl.split("100").head(x).items()}
    decoded, nbytes = compress_roundtrip(sent, PROFILE)
    assert set(decoded) == set(sent) and nbytes > 0
    for name, array in sent.items():
        assert decoded[name].shape == array.shape
        assert set(np.unique(decoded[name])) <= set(np.float32(PROFILE.quantizer.reconstruction))


def test_undecodable_images_are_reported_and_skipped(fastest_xl, val_folder, tmp_path):
    for path in sorted(val_folder.glob("*.jpg"))[:2]:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    report = evaluate_detection(fastest_xl, iter_folder(tmp_path), profile=PROFILE)
    assert report.images == 2
    assert len(report.skipped) == 2 and any("broken.jpg" in s for s in report.skipped)
    assert report.ap50 != report.ap50  # no annotations: AP is NaN, fidelity is measured
    assert 0.0 <= report.fidelity_ap50 <= 1.0


def test_fidelity_on_video_frames(fastest_xl):
    video = shared_path("video", "one-by-one-person-detection.mp4")
    report = evaluate_detection(fastest_xl, iter_source(video, step=50, limit=4), profile=PROFILE)
    assert report.images == 4 and report.detections_ref > 0
    assert 0.0 <= report.fidelity_ap50 <= 1.0


def test_classification_pairs_top1_with_and_without_the_codec():
    folder = shared_path("imagenet-sample")
    from splitinfer.dnn import MissingDependencyError, load_model

    try:
        model = load_model("efficientnet-lite0")
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    profile = CodecProfile(Quantizer.uniform(-4.0, 4.0, 8))
    report = evaluate_classification(model, folder, profile=profile, limit=6)
    assert report.images == 6 and report.top1_ref >= 0.5
    assert report.top1_delta == pytest.approx(report.top1 - report.top1_ref)
    assert 0.0 < report.bits_per_element < 4.0


def test_eval_command_prints_json_with_the_agreed_keys(val_folder, fastest_dir, capsys):
    code = main(["eval", str(val_folder), "--weights", str(fastest_dir), "--limit", "3", "--levels", "8",
                 "--clip-min", "-1", "--clip-max", "6", "--cut", "22", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("ap", "ap50", "ap_ref", "ap50_ref", "ap50_delta", "ap50_delta_se", "fidelity_ap50",
                "bits_per_element", "bytes_per_frame", "images"):
        assert key in result
    assert result["images"] == 3 and result["model"] == "yolo-fastest-1.1-xl" and result["cut"] == "22"


@pytest.mark.parametrize(("args", "message"), [
    (["eval", "/nonexistent/folder"], "does not exist"),
    (["eval", "{val}", "--levels", "8"], "--levels needs --clip-min and --clip-max"),
    (["eval", "{val}", "--model", "yolov9"], "unknown model"),
    (["eval", "{val}", "--model", "yolo-fastest-1.1", "--codec", "default"], "no default codec profile"),
    (["eval", "{val}", "--codec", "/nonexistent/profile.json"], "cannot read the codec profile"),
])
def test_eval_command_errors_are_one_line(args, message, val_folder, fastest_dir, capsys):
    argv = [a.replace("{val}", str(val_folder)) for a in args] + ["--weights", str(fastest_dir)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(("name", "ap50", "ap"), [("yolo-fastest-1.1-xl", 0.464, 0.221), ("yolo-fastest-1.1", 0.353, 0.151)])
def test_coco_mini_ap_matches_the_independent_loader(name, ap50, ap, fastest_dir, val_folder):
    from splitinfer.dnn import load_model

    model = load_model(name, weights=fastest_dir / f"{name}.weights")
    report = evaluate_detection(model, iter_source(val_folder), annotations=coco_annotations_for(val_folder))
    assert report.images == 79 and not report.skipped
    assert report.ap50 == pytest.approx(ap50, abs=0.01)
    assert report.ap == pytest.approx(ap, abs=0.01)


def test_eval_command_refuses_a_profile_made_for_another_model_or_cut(val_folder, fastest_dir, tmp_path, capsys):
    for model, cut, message in [("yolov3", "12", "made for model yolov3"), ("yolo-fastest-1.1-xl", "80", "made for cut 80")]:
        path = tmp_path / f"{model}-{cut}.json"
        CodecProfile(Quantizer.uniform(-1.0, 6.0, 8), model=model, cut=cut).save(path)
        argv = ["eval", str(val_folder), "--weights", str(fastest_dir), "--codec", str(path), "--cut", "22"]
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_a_temporal_profile_codes_video_frames_against_the_previous_frame(fastest_xl):
    import dataclasses

    from splitinfer.codec import Coder

    video = shared_path("video", "one-by-one-person-detection.mp4")
    temporal = dataclasses.replace(PROFILE, coder=Coder.TEMPORAL_CONTEXTS, intra_period=100)
    intra = evaluate_detection(fastest_xl, iter_source(video, limit=6), profile=PROFILE)
    inter = evaluate_detection(fastest_xl, iter_source(video, limit=6), profile=temporal)
    assert inter.images == intra.images == 6
    assert inter.bytes_per_frame < intra.bytes_per_frame
    # Without hysteresis the entropy stage is lossless: the same levels, hence the same detections.
    assert (inter.detections_lost, inter.detections_added) == (intra.detections_lost, intra.detections_added)
    assert inter.fidelity_ap50 == intra.fidelity_ap50
