"""Faults with real processes: the cloud killed and restarted mid-stream, and SIGTERM draining."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import grpc
import pytest

from splitinfer.channel_options import channel_options
from splitinfer.services.edge.app import EdgeSettings, build_pipeline, run_edge
from tests.services.conftest import MODEL, PLAINTEXT, REPO, encoded_frames, free_port, run
from tests.services.test_bad_input import Stream, frame_request

pytestmark = pytest.mark.slow


def test_edge_survives_a_cloud_restart_and_every_frame_gets_exactly_one_result(model, video, cloud_process) -> None:
    port = free_port()
    first = cloud_process(port)
    first.wait_serving()
    frames = 24
    outcomes = []
    restarted = []

    def kill_and_restart(outcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 6 and not restarted:
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=30)
            restarted.append(cloud_process(port))

    settings = EdgeSettings(security=PLAINTEXT, source=str(video), cloud=f"127.0.0.1:{port}", stream_id="cam-restart", model=MODEL,
                            frames=frames, window=4, mode="file", give_up_after_s=120)
    stats = run(run_edge(settings, [kill_and_restart], pipeline=build_pipeline(settings, model)), timeout=240)
    assert restarted, "the cloud was never killed"
    assert [o.result.frame_id for o in outcomes] == list(range(frames))
    assert all(not o.result.HasField("error") for o in outcomes)
    assert stats.reconnects >= 1 and stats.results == frames and stats.lost_on_reconnect == 0


def test_sigterm_answers_queued_frames_then_the_cloud_exits(model, video, cloud_process) -> None:
    frames = encoded_frames(model, video, 6)
    cloud = cloud_process(None, "--drain-seconds", "20", "--stream-queue", "8")
    cloud.wait_serving()

    async def scenario():
        async with grpc.aio.insecure_channel(cloud.address, options=channel_options()) as channel:
            stream = Stream(channel)
            await stream.open()
            for frame_id, frame in enumerate(frames):
                await stream.send(frame_request(frame, frame_id))
            answered = [(await stream.receive()).result.frame_id]
            cloud.process.send_signal(signal.SIGTERM)
            code, details = await stream.status_collecting(answered)
            return answered, code, details

    answered, code, details = run(scenario())
    assert answered == list(range(6))
    assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details
    assert cloud.process.wait(timeout=60) == 0
    assert "stopped" in cloud.log.read_text()


def test_command_line_edge_and_watch_against_a_cloud(video, weights_dir, cloud_process, tmp_path) -> None:
    cloud = cloud_process()
    cloud.wait_serving()
    base = [sys.executable, "-m", "splitinfer.cli"]
    watch = subprocess.Popen(base + ["watch", "--plaintext", "--cloud", cloud.address, "--stream", "cli-cam", "--count", "5",
                                     "--coco", "--timeout", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=REPO)
    edge = subprocess.run(base + ["edge", "--plaintext", "--source", str(video), "--cloud", cloud.address, "--stream-id", "cli-cam",
                                  "--weights", str(weights_dir), "--frames", "5", "--annotate",
                                  str(tmp_path / "annotated.avi")],
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert edge.returncode == 0, edge.stderr
    lines = [json.loads(line) for line in edge.stdout.splitlines()]
    assert [int(line["frame_id"]) for line in lines] == list(range(5))
    assert all(line["stream_id"] == "cli-cam" and line["model"] == MODEL for line in lines)
    assert (tmp_path / "annotated.avi").stat().st_size > 0
    out, err = watch.communicate(timeout=120)
    assert watch.returncode == 0, err
    coco = json.loads(out)
    expected = sum(len(line["detections"]) for line in lines)
    assert len(coco) == expected
    assert all({"image_id", "category_id", "bbox", "score"} == set(item) for item in coco)
