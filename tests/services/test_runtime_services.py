"""The compiled runtimes in the services (#20 item 2): a cloud running its tails in ONNX Runtime and an edge
running its head in OpenVINO stream the real video over gRPC loopback and give the detections that torch on both
sides gives; `splitinfer eval --runtime openvino` reports torch's figures."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from splitinfer.cli import main
from splitinfer.dnn.runtime import RuntimeConfig
from splitinfer.services.edge.app import EdgeSettings, build_pipeline, run_edge
from tests.conftest import shared_path
from tests.runtime_cache import onnx_cache  # noqa: F401 - a fixture
from tests.services.conftest import MODEL, PLAINTEXT, run, running_cloud

pytestmark = pytest.mark.slow  # each side exports its graph and loads the model

FRAMES = 20
BOX_PX, SCORE = 2.0, 0.01


@pytest.fixture
def torch_threads():
    """The services set torch's thread count for the process (--threads); give the next test back its own."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def _edge_settings(video, weights_dir, port: int, stream_id: str, runtime: str) -> EdgeSettings:
    return EdgeSettings(security=PLAINTEXT, source=str(video), cloud=f"127.0.0.1:{port}", stream_id=stream_id,
                        model=MODEL, weights=str(weights_dir), frames=FRAMES, mode="file", runtime=runtime, threads=1)


def _stream_torch(engine, model, video, weights_dir) -> list:
    """The reference: torch on both sides (the session's model and engine)."""
    async def scenario() -> list:
        outcomes: list = []
        async with running_cloud(engine) as server:
            settings = _edge_settings(video, weights_dir, server.port, "torch", "torch")
            await run_edge(settings, [outcomes.append], pipeline=build_pipeline(settings, model))
        return outcomes

    return run(scenario(), timeout=600)


def _stream_compiled(video, weights_dir) -> list:
    """A cloud that loads its model in ONNX Runtime (CloudConfig.runtime) and an edge that loads its own in OpenVINO
    (EdgeSettings.runtime; run_edge builds the pipeline, as `splitinfer edge` does)."""
    from splitinfer.services.cloud.server import CloudConfig, CloudServer

    async def scenario() -> list:
        outcomes: list = []
        server = CloudServer(CloudConfig(model=MODEL, weights=str(weights_dir), host="127.0.0.1", port=0,
                                         metrics_port=-1, plaintext=True, drain_seconds=5.0, runtime="onnxruntime",
                                         threads=1))
        await server.start()
        try:
            assert server.servicer.engine.model.runtime == RuntimeConfig("onnxruntime", threads=1)
            settings = _edge_settings(video, weights_dir, server.port, "compiled", "openvino")
            await run_edge(settings, [outcomes.append])
            assert set(server.servicer.engine.model.runtime_differences) == {"tail-cut60"}
        finally:
            await server.stop(grace=0)
        return outcomes

    return run(scenario(), timeout=600)


def test_an_onnxruntime_cloud_and_an_openvino_edge_detect_what_torch_does(
        onnx_cache, model, engine, video, weights_dir, torch_threads, caplog) -> None:  # noqa: F811
    want = _stream_torch(engine, model, video, weights_dir)
    with caplog.at_level(logging.INFO, logger="splitinfer.dnn"):
        got = _stream_compiled(video, weights_dir)
    assert f"openvino runs {MODEL}-head-cut60 with 1 thread(s) in fp32" in caplog.text  # the edge's head
    assert f"onnxruntime runs {MODEL}-tail-cut60 with 1 thread(s) in fp32" in caplog.text  # the cloud's tail
    assert {path.name.rsplit("-", 1)[0] for path in (onnx_cache / "onnx").glob("*.onnx")} == {
        f"{MODEL}-head-cut60", f"{MODEL}-tail-cut60"}
    for outcomes in (want, got):
        assert [o.result.frame_id for o in outcomes] == list(range(FRAMES))
        assert not [o.result.error for o in outcomes if o.result.HasField("error")]
    boxes, scores, detections = 0.0, 0.0, 0
    for ours, theirs in zip(got, want, strict=True):
        assert ours.result.model == theirs.result.model == MODEL
        mine, reference = ours.result.detections, theirs.result.detections
        assert [d.class_id for d in mine] == [d.class_id for d in reference], ours.result.frame_id
        for g, w in zip(mine, reference):
            boxes = max(boxes, abs(g.x1 - w.x1), abs(g.y1 - w.y1), abs(g.x2 - w.x2), abs(g.y2 - w.y2))
            scores = max(scores, abs(g.score - w.score))
        detections += len(reference)
    print(f"openvino edge + onnxruntime cloud vs torch + torch, {FRAMES} frames, {detections} detections: largest "
          f"box difference {boxes:.3g} px, score difference {scores:.3g}; payload bytes "
          f"{sum(o.result.payload_bytes for o in got)} vs {sum(o.result.payload_bytes for o in want)}")
    assert detections >= FRAMES  # a person walks through every frame
    assert boxes <= BOX_PX and scores <= SCORE


def test_eval_in_openvino_reports_the_figures_of_torch(onnx_cache, capfd, torch_threads) -> None:  # noqa: F811
    common = [str(shared_path("coco-mini", "val2017")), "--codec", "default", "--limit", "8", "--json",
              "--no-progress", "--threads", "1", "--weights", str(shared_path("models", "yolo-fastest-1.1"))]
    reports = {}
    for runtime in ("torch", "openvino"):
        assert main(["eval", *common, "--runtime", runtime]) == 0
        reports[runtime] = json.loads(capfd.readouterr().out)
    ours, theirs = reports["openvino"], reports["torch"]
    print({key: (ours[key], theirs[key]) for key in ("ap50", "ap50_ref", "ap", "bytes_per_frame")})
    assert (ours["runtime"], theirs["runtime"]) == ("openvino", "torch") and ours["images"] == theirs["images"] == 8
    assert abs(ours["ap50"] - theirs["ap50"]) <= 0.005 and abs(ours["ap50_ref"] - theirs["ap50_ref"]) <= 0.005
    assert abs(ours["bytes_per_frame"] - theirs["bytes_per_frame"]) <= 0.01 * theirs["bytes_per_frame"]


def test_splitinfer_cloud_runtime_flag_runs_the_tail_in_openvino(onnx_cache, model, video, weights_dir,  # noqa: F811
                                                                  cloud_process) -> None:
    """The command line's path: --runtime and --threads reach the cloud's model through CloudConfig."""
    cloud = cloud_process(None, "--runtime", "openvino", "--threads", "1")
    cloud.wait_serving(timeout=300)
    outcomes: list = []
    settings = _edge_settings(video, weights_dir, cloud.port, "cli-openvino", "torch")
    run(run_edge(settings, [outcomes.append], pipeline=build_pipeline(settings, model)), timeout=300)
    assert [o.result.frame_id for o in outcomes] == list(range(FRAMES))
    assert not [o.result.error for o in outcomes if o.result.HasField("error")]
    assert sum(len(o.result.detections) for o in outcomes) >= FRAMES
    assert f"openvino runs {MODEL}-tail-cut60 with 1 thread(s) in fp32" in cloud.log.read_text()


def test_splitinfer_demo_runs_edge_and_cloud_in_onnxruntime(onnx_cache, capsys, caplog, torch_threads) -> None:  # noqa: F811
    """The demo shares one model between the edge's heads and the cloud's tails: both run in the runtime chosen."""
    weights = str(shared_path("models", "yolo-fastest-1.1"))
    with caplog.at_level(logging.INFO, logger="splitinfer.dnn"):
        assert main(["demo", "--frames", "6", "--weights", weights, "--runtime", "onnxruntime", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "frames answered" in out and "6 (0 with errors)" in out
    assert f"onnxruntime runs {MODEL}-head-cut60 with 1 thread(s)" in caplog.text
    assert f"onnxruntime runs {MODEL}-tail-cut60 with 1 thread(s)" in caplog.text
