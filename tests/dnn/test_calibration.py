"""Calibration: activation statistics at a cut over real calibration images, quantizer choice, profile checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splitinfer.cli import main
from splitinfer.codec import CodecError, CodecProfile, Coder, Quantizer
from splitinfer.codec.clip_range import ValueHistogram, mse_optimal_range
from splitinfer.dnn import ImageDecodeError, ModelError, load_model
from splitinfer.dnn.calibration import (
    ProfileMismatchError,
    channel_sensitivity,
    check_profile_matches,
    choose_quantizer,
    collect_calibration,
)
from tests.conftest import shared_path

MODEL = "yolo-fastest-1.1-xl"


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL, weights=shared_path("models", "yolo-fastest-1.1"))


@pytest.fixture(scope="module")
def calibration(model):
    return collect_calibration(model, "80", shared_path("coco-mini", "calib2017"), max_images=3,
                               sample_size=30_000, keep_images=2, progress=False)


def test_statistics_are_a_bounded_sample_of_the_real_activations(calibration):
    with np.load(shared_path("activations", "yolo-fastest-1.1-xl.npz")) as data:
        expected = data["layer80"][:3]
        files = list(data["files"][:3])
    assert calibration.files == files  # sorted by name, like the shared activations
    sample = calibration.samples["layer80"]
    assert sample.shape == (48, 20, 20) and sample.seen == expected.size
    assert sample.values.size == 30_000 and sample.channels.size == 30_000
    assert set(np.unique(sample.channels)) <= set(range(48))
    reference = np.sort(expected.ravel())  # every sampled value is one of the real activations
    position = np.clip(np.searchsorted(reference, sample.values), 1, reference.size - 1)
    nearest = np.minimum(np.abs(reference[position] - sample.values), np.abs(reference[position - 1] - sample.values))
    # Recorded before batch norms were folded at load: folding reorders float operations (3e-5 relative).
    assert np.all(nearest < 1e-4 + 1e-4 * np.abs(sample.values))
    np.testing.assert_allclose(calibration.kept[0].tensors["layer80"][0], expected[0], atol=1e-4)
    assert len(calibration.kept) == 2 and all(k.reference for k in calibration.kept)


def test_mse_rule_uses_the_mse_optimal_range_of_the_sample(model, calibration):
    choice = choose_quantizer(model, calibration, levels=7, clip="mse", symmetric=True)
    expected = mse_optimal_range(ValueHistogram.of(calibration.samples["layer80"].values), 7, symmetric=True)
    quantizer = choice.quantizer
    assert quantizer == Quantizer.uniform(expected.clip_min, expected.clip_max, 7)
    assert 0.0 in quantizer.reconstruction  # odd N over a symmetric range keeps an exact zero
    assert choice.figures["changes_per_image"] >= 0.0
    assert abs(sum(choice.figures["level_probabilities"]) - 1.0) < 1e-3
    wider = choose_quantizer(model, calibration, levels=7, clip="mse", symmetric=True, scale=1.5).quantizer
    assert wider.clip_max == pytest.approx(1.5 * quantizer.clip_max, rel=1e-6)


def test_fidelity_search_keeps_the_candidate_with_the_fewest_changes(model, calibration):
    choice = choose_quantizer(model, calibration, levels=5, kind="ecsq", lam=1.0, weight_power=2.0, clip="search")
    losses = choice.figures["search_changes_per_image"]
    assert len(losses) >= 3 and choice.figures["changes_per_image"] == min(losses.values())
    assert choice.quantizer.kind.name == "ECSQ" and choice.figures["clip_method"].startswith("fidelity search")


def test_profile_for_another_model_or_cut_is_refused_naming_the_mismatch():
    profile = CodecProfile(Quantizer.uniform(-8.0, 8.0, 7), model=MODEL, cut="80")
    check_profile_matches(profile, MODEL, "80")
    check_profile_matches(profile, MODEL, "layer80")
    check_profile_matches(CodecProfile(Quantizer.uniform(-8.0, 8.0, 7)), "yolov3", "12")  # not bound to any model
    with pytest.raises(ProfileMismatchError, match="cut '80' but is used with cut '60'"):
        check_profile_matches(profile, MODEL, "60")
    with pytest.raises(ProfileMismatchError, match="model 'yolo-fastest-1.1-xl' but is used with model 'yolov3'"):
        check_profile_matches(profile, "yolov3", "80")
    assert issubclass(ProfileMismatchError, CodecError)


def test_bad_calibration_input_gets_a_clear_error(model, calibration, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        collect_calibration(model, "80", tmp_path / "missing", progress=False)
    with pytest.raises(ModelError, match="no images"):
        collect_calibration(model, "80", tmp_path, progress=False)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        collect_calibration(model, "80", tmp_path, progress=False)
    with pytest.raises(ModelError, match="unknown cut"):
        collect_calibration(model, "999", shared_path("coco-mini", "calib2017"), progress=False)
    with pytest.raises(ModelError, match="unknown clip method"):
        choose_quantizer(model, calibration, levels=5, clip="guess")
    with pytest.raises(ModelError, match="scale must be a positive number"):
        choose_quantizer(model, calibration, levels=5, clip="mse", scale=0.0)
    with pytest.raises(ModelError, match="unknown quantizer kind"):
        choose_quantizer(model, calibration, levels=5, kind="vector", clip="mse")


def test_a_cut_that_sends_several_tensors_is_refused(model):
    several = collect_calibration(model, "90", shared_path("coco-mini", "calib2017"), max_images=1,
                                  sample_size=1000, keep_images=0, progress=False)
    assert len(several.samples) == 3
    with pytest.raises(ModelError, match="sends 3 tensors"):
        choose_quantizer(model, several, levels=5, clip="mse")


def test_calibrate_command_writes_a_profile_the_edge_can_load(tmp_path, capsys):
    output = tmp_path / "profile.json"
    code = main(["calibrate", "--model", MODEL, "--cut", "80", "--data", str(shared_path("coco-mini", "calib2017")),
                 "--weights", str(shared_path("models", "yolo-fastest-1.1")), "--levels", "7", "--clip", "mse",
                 "--symmetric", "--max-images", "3", "--output", str(output), "--no-progress"])
    assert code == 0
    profile = CodecProfile.load(output)
    assert (profile.model, profile.cut, profile.quantizer.levels) == (MODEL, "80", 7)
    assert profile.figures["calibration_images"] == 3 and profile.figures["bytes_per_frame"] > 0
    assert "wrote" in capsys.readouterr().out
    check_profile_matches(profile, MODEL, "80")


def test_calibrate_command_writes_a_temporal_profile_for_video(tmp_path):
    output = tmp_path / "video.json"
    code = main(["calibrate", "--model", MODEL, "--cut", "80", "--data", str(shared_path("coco-mini", "calib2017")),
                 "--weights", str(shared_path("models", "yolo-fastest-1.1")), "--levels", "9", "--clip", "mse",
                 "--coder", "temporal-contexts", "--hysteresis", "0.1", "--max-images", "2", "--output", str(output),
                 "--no-progress"])
    assert code == 0
    profile = CodecProfile.load(output)
    assert (profile.coder, profile.hysteresis) == (Coder.TEMPORAL_CONTEXTS, 0.1)
    assert profile.figures["bytes_per_frame"] > 0  # measured as the intra frames the stream opens with


def test_calibrate_command_writes_a_ladder_cheapest_first_with_each_points_hysteresis(tmp_path):
    from splitinfer.codec.ladder import CodecLadder

    output = tmp_path / "ladder.json"
    code = main(["calibrate", "--model", MODEL, "--cut", "60", "--data", str(shared_path("coco-mini", "calib2017")),
                 "--weights", str(shared_path("models", "yolo-fastest-1.1")), "--ladder", "9,3@0.5,3", "--clip", "mse",
                 "--coder", "temporal-contexts", "--hysteresis", "0.1", "--rdo-lambda", "0.05", "--max-images", "2",
                 "--output", str(output), "--no-progress"])
    assert code == 0
    ladder = CodecLadder.load(output)
    assert [(p.quantizer.levels, p.hysteresis) for p in ladder.points] == [(3, 0.5), (3, 0.1), (9, 0.1)]
    assert {p.rdo_lambda for p in ladder.points} == {0.05}
    weights = np.array(ladder.points[0].rdo_weights["layer60"])
    assert weights.shape == (48,) and abs(weights.mean() - 1) < 1e-9 and weights.min() >= 0 and weights.std() > 0
    for bad in ("-0.1", "65"):  # refused before minutes of calibration
        assert main(["calibrate", "--model", MODEL, "--data", str(shared_path("coco-mini", "calib2017")),
                     "--rdo-lambda", bad]) == 2
    assert ladder.cut == "60" and ladder.figures["calibration_images"] == 2
    assert main(["calibrate", "--model", MODEL, "--data", str(shared_path("coco-mini", "calib2017")),
                 "--ladder", "3@x"]) == 2


def test_channel_sensitivity_weights_each_channel_by_the_tails_gradient(model, calibration):
    weights = channel_sensitivity(model, calibration)
    spec = model.split("80").tensors
    assert {name: w.shape for name, w in weights.items()} == {s.name: (s.shape[0],) for s in spec}
    for w in weights.values():  # mean 1; some channels matter to the detections more than others
        assert w.mean() == pytest.approx(1.0) and w.min() >= 0 and w.max() > 1.5 * w.min()
    with pytest.raises(ModelError, match="at least one kept calibration image"):
        channel_sensitivity(model, calibration, images=0)


def test_channel_sensitivity_of_a_classifier_uses_its_best_class_probability():
    from splitinfer.dnn import MissingDependencyError

    try:
        classifier = load_model("efficientnet-lite0")
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    calibration = collect_calibration(classifier, classifier.default_cut, shared_path("imagenet-sample"),
                                      max_images=2, sample_size=1000, keep_images=2, progress=False)
    weights = channel_sensitivity(classifier, calibration)
    assert all(w.mean() == pytest.approx(1.0) and np.all(np.isfinite(w)) for w in weights.values())


def test_calibrate_command_without_data_says_what_to_pass(capsys):
    assert main(["calibrate", "--model", MODEL]) == 2
    assert "--data" in capsys.readouterr().err


def test_a_malformed_profile_file_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"id": "splitinfer.codec-profile/1", "quantizer": {"kind": "UNIFORM"}}))
    with pytest.raises(CodecError, match="quantizer"):
        CodecProfile.load(path)


def test_eval_refuses_a_profile_made_for_another_cut(tmp_path, capsys):
    path = tmp_path / "cut80.json"
    CodecProfile(Quantizer.uniform(-8.0, 8.0, 7), model=MODEL, cut="80").save(path)
    code = main(["eval", str(shared_path("coco-mini", "val2017")), "--model", MODEL, "--cut", "60", "--codec", str(path),
                 "--weights", str(shared_path("models", "yolo-fastest-1.1")), "--limit", "1"])
    error = capsys.readouterr().err
    assert code == 2 and "cut" in error and "80" in error and "60" in error


def test_default_profiles_match_their_registry_entries():
    from importlib import resources

    from splitinfer.dnn import get_spec, list_models

    with_profiles = [name for name in list_models() if get_spec(name).default_profile]
    assert MODEL in with_profiles
    for name in with_profiles:
        spec = get_spec(name)
        profile = CodecProfile.load(str(resources.files("splitinfer.dnn").joinpath(spec.default_profile)))
        check_profile_matches(profile, name, spec.default_cut)
        assert profile.cut == spec.default_cut and profile.figures["bytes_per_frame"] > 0


def test_eval_codec_default_uses_the_packaged_profile_and_its_cut(capsys):
    code = main(["eval", str(shared_path("coco-mini", "val2017")), "--model", MODEL, "--codec", "default",
                 "--weights", str(shared_path("models", "yolo-fastest-1.1")), "--limit", "2", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cut"] == "60" and result["codec"].startswith("default") and result["bytes_per_frame"] > 0
