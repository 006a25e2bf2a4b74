"""`--partition auto` (issue 18 item 2): the edge plans its partition from the partition curves and its own measured
costs, switches partition mid-stream over real gRPC with exactly one result per frame, and `splitinfer eval` runs
whatever auto chose; bad budgets, partitions and curves files are refused before anything loads."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from splitinfer.errors import ConfigError
from splitinfer.services.edge.app import EdgeSettings, build_pipeline, run_edge
from splitinfer.services.edge.auto_partition import MIN_FRAMES_BETWEEN_SWITCHES
from splitinfer.services.edge.partition_plan import OperatingPoint, PartitionCurves
from splitinfer.services.edge.preflight import check_edge
from splitinfer.v1 import inference_pb2
from tests.services.conftest import MODEL, PLAINTEXT, run, running_cloud
from tests.services.test_partitions import cloud_config, pki, security_of  # noqa: F401 - pki: a fixture

pytest.importorskip("av", reason="the pixels partition needs PyAV (pip install 'splitinfer[pixels]')")

# Curves made up for the tests (the shipped ones are measured): detections best, then features, then pixels.
CURVES = PartitionCurves(MODEL, (OperatingPoint("pixels", 60.0, 1.0, 64.0, setting="h264"),
                                 OperatingPoint("features", 62.0, 0.5, 64.0, setting="ladder"),
                                 OperatingPoint("detections", 5.0, 0.0)), cut="60", video="made up")


@pytest.fixture
def curves_file(tmp_path: Path) -> Path:
    path = tmp_path / "curves.json"
    CURVES.save(path)
    return path


def auto_settings(video: Path, curves: Path, **overrides) -> EdgeSettings:
    values = dict(source=str(video), security=PLAINTEXT, stream_id="cam-auto", model=MODEL, mode="file",
                  partition="auto", rate_kbps=64.0, edge_budget_ms=1000.0, partition_curves=str(curves),
                  give_up_after_s=120)
    values.update(overrides)
    return EdgeSettings(**values)


@pytest.mark.parametrize("transport", ["plaintext", "tls"])
def test_auto_switches_partition_mid_stream_and_every_frame_gets_exactly_one_result(model, engine, video, curves_file,
                                                                                   caplog, pki, transport) -> None:
    frames = MIN_FRAMES_BETWEEN_SWITCHES + 12

    async def scenario():
        async with running_cloud(engine, **cloud_config(transport, pki)) as server:
            settings = auto_settings(video, curves_file, cloud=f"127.0.0.1:{server.port}", frames=frames,
                                     security=security_of(transport, pki))
            pipeline = build_pipeline(settings, model)
            switcher = pipeline.switcher
            starting = pipeline.plan.partition
            switcher.costs = {"pixels": 1.0, "features": 10.0, "detections": 100.0}  # this edge's, made up
            outcomes = []

            def sink(outcome) -> None:
                outcomes.append(outcome)
                if len(outcomes) == 3:  # the edge's CPU budget shrinks (another job took the CPU)
                    switcher.set_budgets(edge_budget_ms=5.0)

            stats = await run_edge(settings, [sink], pipeline=pipeline)
            return starting, outcomes, stats, switcher, server.metrics.exposition().decode()

    with caplog.at_level(logging.INFO, logger="splitinfer.edge"):
        starting, outcomes, stats, switcher, metrics = run(scenario(), timeout=300)
    assert starting == "detections"  # a 1 s budget fits the whole model: the fewest predicted changes
    results = [o.result for o in outcomes]
    assert [r.frame_id for r in results] == list(range(frames))  # exactly one result per frame, in order
    assert all(not r.HasField("error") for r in results)
    partitions = [r.origin.partition for r in results]
    switch_at = partitions.index(inference_pb2.PARTITION_PIXELS)
    assert switch_at >= MIN_FRAMES_BETWEEN_SWITCHES  # hysteresis: no switch before that many frames
    assert partitions == [inference_pb2.PARTITION_DETECTIONS] * switch_at + \
        [inference_pb2.PARTITION_PIXELS] * (frames - switch_at)
    assert stats.partition_switches == 1 and switcher.stats.switches == 1 and switcher.plan.partition == "pixels"
    assert results[switch_at].origin.pixel_coding.target_kbps == 64.0
    assert f'splitinfer_partition_frames_total{{partition="pixels"}} {frames - switch_at}.0' in metrics
    switch_logs = [r for r in caplog.records if "switching from detections to pixels" in r.getMessage()]
    assert len(switch_logs) == 1 and switch_logs[0].event["from"] == "detections"


def test_auto_plans_features_when_the_edge_fits_a_head_but_not_the_whole_model(model, video, curves_file) -> None:
    settings = auto_settings(video, curves_file, partitions="pixels,features")
    pipeline = build_pipeline(settings, model)
    assert pipeline.plan.partition == "features" and pipeline.rate is not None
    assert pipeline.rate.ceiling_bps == 64_000 and pipeline.cut == "60"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"rate_kbps": None}, "add --rate-kbps"),
    ({"rate_kbps": -3.0}, "--rate-kbps must be positive"),
    ({"edge_budget_ms": -1.0}, "--edge-budget-ms must be positive"),
    ({"partitions": "pixels,audio"}, "'audio' is not a partition"),
    ({"cut": "60"}, "--cut fix(es) the feature codec"),
    ({"pixel_crf": 23}, "drop --pixel-crf"),
    ({"partition": "features"}, "add --partition auto"),
    ({"partition_curves": "/nonexistent/curves.json"}, "cannot be read"),
])
def test_auto_refuses_bad_flags_before_the_model_loads(video, curves_file, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_edge(auto_settings(video, curves_file, **overrides), connect_timeout_s=0)


def test_auto_refuses_curves_of_another_version_or_model(video, tmp_path) -> None:
    path = tmp_path / "curves.json"
    data = CURVES.to_json()
    path.write_text(json.dumps({**data, "id": "splitinfer.partition-curves/9"}))
    with pytest.raises(ConfigError, match="another version"):
        check_edge(auto_settings(video, path), connect_timeout_s=0)
    path.write_text(json.dumps({**data, "model": "efficientnet-lite0"}))
    with pytest.raises(ConfigError, match="measured for model efficientnet-lite0"):
        check_edge(auto_settings(video, path), connect_timeout_s=0)


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "partition", "cut"), [
    (["--edge-budget-ms", "5"], "pixels", "input"),  # only pixel encoding fits 5 ms
    (["--partitions", "pixels,features"], "features", "60"),
    ([], "detections", "output"),
])
def test_eval_auto_runs_the_partition_it_plans(video, weights_dir, curves_file, capsys, argv, partition, cut) -> None:
    from splitinfer.cli import main

    assert main(["eval", str(video), "--weights", str(weights_dir), "--partition", "auto", "--rate-kbps", "64",
                 "--partition-curves", str(curves_file), "--limit", "4", "--json", "--no-progress", *argv]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["codec"].startswith(f"auto ({partition}") and report["cut"] == cut and report["images"] == 4
    if partition == "detections":
        assert report["detections_lost"] == report["detections_added"] == 0 and report["bytes_per_frame"] > 0


def test_eval_auto_says_what_budget_would_fit(video, weights_dir, curves_file, capsys) -> None:
    from splitinfer.cli import main

    assert main(["eval", str(video), "--weights", str(weights_dir), "--partition", "auto", "--rate-kbps", "8",
                 "--partition-curves", str(curves_file), "--partitions", "pixels,features", "--limit", "2"]) == 2
    assert "it needs an uplink of at least 64.0 kbit/s (--rate-kbps)" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_features_under_rate_control_reports_its_bytes(video, weights_dir, capsys) -> None:
    from splitinfer.cli import main

    assert main(["eval", str(video), "--weights", str(weights_dir), "--partition", "features", "--rate-kbps", "64",
                 "--limit", "4", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["codec"].startswith("features: cut 60, rate control at 64 kbit/s") and report["bytes_per_frame"] > 0


@pytest.mark.slow
def test_calibrate_partitions_writes_curves_the_planner_reads(video, weights_dir, tmp_path, capsys) -> None:
    from splitinfer.cli import main

    output = tmp_path / "curves.json"
    assert main(["calibrate-partitions", str(video), "--weights", str(weights_dir), "--rates-kbps", "64",
                 "--limit", "3", "--output", str(output)]) == 0
    curves = PartitionCurves.load(output)
    assert {p.partition for p in curves.points} == {"pixels", "features", "detections"}
    assert curves.video.startswith(video.name) and curves.frames == 3 and curves.cut == "60"
    assert set(curves.edge_ms) == {"pixels", "features", "detections"}


@pytest.mark.parametrize(("argv", "message"), [
    (["/nonexistent/video.mp4"], "is not a video file"),
    (["VIDEO", "--rates-kbps", "32,fast"], "--rates-kbps wants comma-separated kbit/s"),
    (["VIDEO", "--rates-kbps=-5"], "--rates-kbps wants positive kbit/s"),
    (["VIDEO", "--limit", "0"], "--limit and --frame-step must be at least 1"),
    (["VIDEO", "--ladder", "/no/ladder.json"], "codec ladder '/no/ladder.json' does not exist"),
    (["VIDEO", "--ladder", "OTHER"], "was made for model yolo-fastest-1.1, not yolo-fastest-1.1-xl"),
])
def test_calibrate_partitions_refuses_bad_input_before_loading_the_model(video, argv, message, capsys,
                                                                         tmp_path) -> None:
    from splitinfer.cli import main
    from splitinfer.services.profiles import shipped_file

    other = json.loads(shipped_file(MODEL, "ladder").read_text())  # the same ladder, said to be another model's
    other["model"] = "yolo-fastest-1.1"
    for point in other["points"]:
        point["model"] = "yolo-fastest-1.1"
    (tmp_path / "other.json").write_text(json.dumps(other))
    named = {"VIDEO": str(video), "OTHER": str(tmp_path / "other.json")}
    assert main(["calibrate-partitions", *[named.get(a, a) for a in argv]]) == 2
    assert message in capsys.readouterr().err


def test_eval_switches_like_a_streaming_edge_when_detections_outgrow_the_uplink(model, video) -> None:
    """`splitinfer eval --partition auto` runs auto as the edge does: curves that promise detections at 1 kbit/s
    start it on detections; they send more than the 4 kbit/s uplink here, so after MIN_FRAMES_BETWEEN_SWITCHES
    frames it switches to features (within the uplink), each frame coded by exactly one partition."""
    from splitinfer.codec.ladder import CodecLadder
    from splitinfer.services.edge.auto_partition import AutoRequest, auto_round_trip, resolve_plan
    from splitinfer.services.edge.capture import FrameGrabber
    from splitinfer.services.profiles import packaged_profile

    curves = PartitionCurves(MODEL, (OperatingPoint("features", 4.0, 0.5, 4.0, setting="ladder"),
                                     OperatingPoint("detections", 1.0, 0.0)), cut="60", video="made up")
    request = AutoRequest(4.0, 1000.0, "features,detections")
    costs = {"features": 10.0, "detections": 20.0}
    resolved = resolve_plan(model, request, fps=10.0, pixel_settings=None, costs=costs, curves=curves)
    assert resolved.plan.partition == "detections"
    ladder = CodecLadder.load(packaged_profile(MODEL, "ladder"))
    auto, name = auto_round_trip(model, resolved, request, pixel_settings=None, ladder=ladder, fps=10.0)
    frames = MIN_FRAMES_BETWEEN_SWITCHES + 10
    with FrameGrabber(str(video), max_frames=frames) as grabber:
        sent = [auto(frame.image)[2] for frame in grabber.frames()]
    assert len(sent) == len(auto.partitions_run) == frames
    assert auto.partitions_run == ["detections"] * MIN_FRAMES_BETWEEN_SWITCHES + ["features"] * 10
    assert auto.switcher.stats.switches == 1 and auto.cut == "output+60"
    assert auto.summary() == (f"detections for frames 0-{MIN_FRAMES_BETWEEN_SWITCHES - 1}, then features for frames "
                              f"{MIN_FRAMES_BETWEEN_SWITCHES}-{frames - 1}")
    assert name.startswith("auto (detections")
