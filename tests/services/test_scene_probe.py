"""Auto's scene probe (issue 18, "auto calibrates on the camera's own scene"): on the source's first K frames it
measures each partition that fits, corrects the partition curves with what it saw, and the plan follows the scene
where the probe resolves the difference and the curves where it cannot. Bad --probe-frames values and sources
shorter than the probe are refused with a message that says what to do."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import pytest

from splitinfer.errors import ConfigError
from splitinfer.services.edge.app import build_pipeline, grab_probe_frames
from splitinfer.services.edge.auto_partition import AutoRequest, resolve_plan
from splitinfer.services.edge.partition_plan import OperatingPoint, PartitionCurves
from splitinfer.services.edge.preflight import check_edge
from splitinfer.services.edge.scene_probe import DEFAULT_PROBE_FRAMES, check_probe_frames, read_probe_frames
from splitinfer.services.pixels import pixel_settings_from_flags
from tests.services.conftest import MODEL
from tests.services.test_auto_partition import auto_settings

pytest.importorskip("av", reason="the pixels partition needs PyAV (pip install 'splitinfer[pixels]')")

COSTS = {"pixels": 2.0, "features": 20.0, "detections": 40.0}  # CPU ms/frame: every partition fits 1000 ms
FPS = 10.0  # the shared video's

# Curves that claim the opposite of what the shared video shows at 16 kbit/s (pixels make ~3 changes a frame
# there, features well under 1): the probe must overrule them when it sees enough frames.
CLAIMS_PIXELS_WIN = PartitionCurves(MODEL, (OperatingPoint("pixels", 16.0, 0.1, 16.0, setting="h264"),
                                            OperatingPoint("features", 16.0, 1.0, 16.0, setting="ladder")),
                                    cut="60", video="made up")
# Curves that claim detections send 1 kbit/s; the shared video's person takes ~6 (75 B a frame at 10 fps).
CLAIMS_DETECTIONS_FIT = PartitionCurves(MODEL, (OperatingPoint("pixels", 4.0, 2.0, 4.0, setting="h264"),
                                                OperatingPoint("features", 4.0, 1.0, 4.0, setting="ladder"),
                                                OperatingPoint("detections", 1.0, 0.0)), cut="60", video="made up")


@pytest.fixture
def claims_file(tmp_path: Path) -> Path:
    path = tmp_path / "curves.json"
    CLAIMS_PIXELS_WIN.save(path)
    return path


@pytest.fixture(scope="module")
def first_frames(video: Path) -> list:
    return read_probe_frames(video, DEFAULT_PROBE_FRAMES)


@pytest.fixture(scope="module")
def probe_cache() -> dict:
    return {}  # the probe of one partition at one rate on first_frames, shared by the tests (it is deterministic)


@pytest.fixture(scope="module")
def ladder(model):
    from splitinfer.codec.ladder import CodecLadder
    from splitinfer.services.profiles import packaged_profile

    return CodecLadder.load(packaged_profile(model.name, "ladder"))


def resolve(model, curves, rate_kbps, images, ladder, cache, **request):
    return resolve_plan(model, AutoRequest(rate_kbps, 1000.0, **request), fps=FPS, costs=COSTS, curves=curves,
                        pixel_settings=pixel_settings_from_flags(preset=None, crf=None, rate_kbps=rate_kbps,
                                                                 key_interval=None, size=None),
                        probe_images=images, ladder=ladder, probe_cache=cache)


def test_the_probe_overrules_curves_that_the_scene_contradicts(model, first_frames, ladder, probe_cache) -> None:
    without = resolve(model, CLAIMS_PIXELS_WIN, 16.0, [], ladder, probe_cache)
    assert without.plan.partition == "pixels" and without.probe is None  # the curves alone

    auto = resolve(model, CLAIMS_PIXELS_WIN, 16.0, first_frames, ladder, probe_cache)
    pixels, features = auto.probe.probed["pixels"], auto.probe.probed["features"]
    assert len(pixels.changes) == len(features.changes) == DEFAULT_PROBE_FRAMES
    assert pixels.changes_per_frame > features.changes_per_frame + 1  # the scene says features
    assert auto.plan.partition == "features" and auto.plan.rate_kbps == 16.0
    # The corrected curves pass through the probed points, and they are what auto plans on from now on.
    corrected = {p.partition: p.changes_per_frame for p in auto.curves.points}
    assert corrected == pytest.approx({"pixels": pixels.changes_per_frame, "features": features.changes_per_frame})
    assert auto.plan.predicted_changes_per_frame == pytest.approx(features.changes_per_frame)
    assert "scene probe" in auto.curves.video


def test_a_probe_too_short_to_resolve_a_difference_keeps_the_curves_choice(model, first_frames, ladder,
                                                                            probe_cache, caplog) -> None:
    # Five frames make one 5-frame block: no standard error, so the probe cannot resolve pixels against features.
    with caplog.at_level(logging.INFO, logger="splitinfer.edge"):
        auto = resolve(model, CLAIMS_PIXELS_WIN, 16.0, first_frames[:5], ladder, {})
    assert auto.probe.probed["pixels"].changes_per_frame > auto.probe.probed["features"].changes_per_frame
    assert auto.plan.partition == "pixels"
    assert "the probe cannot resolve it" in caplog.text and "the curves' choice stays" in caplog.text


def test_detections_that_send_more_than_the_uplink_on_this_scene_are_not_chosen(model, first_frames, ladder,
                                                                                 probe_cache, caplog) -> None:
    assert resolve(model, CLAIMS_DETECTIONS_FIT, 4.0, [], ladder, probe_cache).plan.partition == "detections"
    with caplog.at_level(logging.INFO, logger="splitinfer.edge"):
        auto = resolve(model, CLAIMS_DETECTIONS_FIT, 4.0, first_frames, ladder, probe_cache)
    measured = auto.probe.probed["detections"]
    assert measured.kbps > 4.0 and set(measured.changes) == {0}
    assert auto.plan.partition in ("pixels", "features")
    detections = next(p for p in auto.curves.points if p.partition == "detections")
    assert detections.kbps == pytest.approx(measured.kbps_upper) and detections.kbps >= measured.kbps
    assert "detections does not fit here: the probe measured" in caplog.text
    assert "scene probe of 30 frames took" in caplog.text  # its cost is logged


def test_the_edge_plans_on_its_own_first_frames_and_switches_on_the_corrected_curves(model, video,
                                                                                   claims_file) -> None:
    pipeline = build_pipeline(auto_settings(video, claims_file, rate_kbps=16.0, probe_frames="10"), model)
    assert pipeline.plan.partition == "features"  # ten frames resolve what the curves got wrong
    assert "10-frame scene probe" in pipeline.switcher.curves.video


@pytest.mark.slow
def test_eval_auto_probes_the_video_it_evaluates(video, weights_dir, claims_file, capsys) -> None:
    from splitinfer.cli import main

    argv = ["eval", str(video), "--weights", str(weights_dir), "--partition", "auto", "--rate-kbps", "16",
            "--partition-curves", str(claims_file), "--limit", "4", "--json", "--no-progress"]
    assert main([*argv, "--probe-frames", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["codec"].startswith("auto (pixels")
    assert main(argv) == 0  # the default probe
    assert json.loads(capsys.readouterr().out)["codec"].startswith("auto (features")


@pytest.mark.parametrize("value", ["-1", "1.5", "many", -3, 2.0, True])
def test_probe_frames_must_be_a_whole_number_of_frames(value) -> None:
    with pytest.raises(ConfigError, match=r"--probe-frames must be a whole number of frames >= 0 \(0: plan from"):
        check_probe_frames(value)


@pytest.mark.parametrize("value", ["-1", "1.5"])
def test_the_edge_refuses_a_bad_probe_length_before_the_model_loads(video, claims_file, value) -> None:
    with pytest.raises(ConfigError, match="--probe-frames must be a whole number"):
        check_edge(auto_settings(video, claims_file, probe_frames=value), connect_timeout_s=0)


def test_probe_frames_go_with_auto_only(video, weights_dir, capsys) -> None:
    from splitinfer.cli import main

    assert main(["eval", str(video), "--weights", str(weights_dir), "--partition", "pixels", "--rate-kbps", "16",
                 "--probe-frames", "10", "--limit", "2"]) == 2
    assert "--probe-frames set(s) how --partition auto plans: add --partition auto" in capsys.readouterr().err


@pytest.fixture(scope="module")
def five_frame_video(video: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("short") / "five.avi"
    frames = read_probe_frames(video, 5)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_a_source_shorter_than_the_probe_is_refused_with_what_to_do(five_frame_video, weights_dir, claims_file,
                                                                   capsys) -> None:
    from splitinfer.cli import main

    with pytest.raises(ConfigError, match="has 5 decodable frame.s., fewer than the 8 the scene probe .* lower "
                                          r"--probe-frames \(0: plan from the curves alone\)"):
        read_probe_frames(five_frame_video, 8)
    with pytest.raises(ConfigError, match="gave 5 frame.s., fewer than the 8 the scene probe"):
        grab_probe_frames(auto_settings(five_frame_video, claims_file, probe_frames="8"), 8)
    assert main(["eval", str(five_frame_video), "--weights", str(weights_dir), "--partition", "auto",
                 "--rate-kbps", "16", "--partition-curves", str(claims_file), "--probe-frames", "8",
                 "--limit", "2"]) == 2
    assert "fewer than the 8 the scene probe" in capsys.readouterr().err


def test_a_live_source_waits_for_its_own_probe_frames(video, claims_file, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="splitinfer.edge"):
        images = grab_probe_frames(auto_settings(video, claims_file, mode="live"), 4)  # a file read at its own pace
    assert len(images) == 4 and all(image.ndim == 3 for image in images)
    assert "the scene probe read 4 frames of" in caplog.text and "(live mode) in" in caplog.text


def test_a_bad_probe_length_in_the_environment_is_refused(video, weights_dir, claims_file, monkeypatch,
                                                          capsys) -> None:
    from splitinfer.cli import main

    monkeypatch.setenv("SPLITINFER_PROBE_FRAMES", "-2")
    assert main(["eval", str(video), "--weights", str(weights_dir), "--partition", "auto", "--rate-kbps", "16",
                 "--partition-curves", str(claims_file), "--limit", "2"]) == 2
    assert "--probe-frames must be a whole number of frames >= 0" in capsys.readouterr().err



@pytest.mark.slow
def test_the_demo_says_what_the_probe_measured_and_cost(weights_dir, claims_file, capsys) -> None:
    from splitinfer.cli import main

    assert main(["demo", "--frames", "4", "--weights", str(weights_dir), "--partition", "auto", "--rate-kbps", "16",
                 "--partition-curves", str(claims_file), "--probe-frames", "10"]) == 0
    out = capsys.readouterr().out
    assert "auto partition: scene probe of 10 frames took" in out and "s of CPU" in out
    assert "the probe resolves it: pixels - features" in out
    assert "auto partition: features at 16 kbit/s" in out and "4 (0 with errors)" in out
