"""#12 items 3, 4, 7, 8 and #13 item 6 on a real edge and cloud: --frames counts answered frames in live mode,
annotated video keeps the source's rate and never hides a label, edge and cloud metrics, truncated files fail."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import cv2
import pytest

from splitinfer.services.edge.app import EdgeSettings, build_pipeline, run_edge
from splitinfer.errors import CaptureError
from splitinfer.v1 import inference_pb2
from tests.services.conftest import MODEL, PLAINTEXT, run, running_cloud


def _clip(video, path, fps: float, frames: int, size=(384, 216), keep: float = 1.0):
    """The sample video's first frames re-encoded at `fps` (MJPG .avi), optionally cut to `keep` of its bytes."""
    capture = cv2.VideoCapture(str(video))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for _ in range(frames):
        ok, image = capture.read()
        assert ok
        writer.write(cv2.resize(image, size))
    writer.release()
    capture.release()
    if keep < 1.0:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
    return path


def _http(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_frames_counts_answered_frames_on_a_live_source(engine, model, video) -> None:
    """--frames 5 on a live source answered 1 frame: it counted grabbed frames, most of them dropped."""
    outcomes = []

    def slow_sink(outcome) -> None:  # a slow consumer: the live grabber drops frames meanwhile
        outcomes.append(outcome)
        time.sleep(0.3)

    async def scenario():
        async with running_cloud(engine) as cloud:
            settings = EdgeSettings(security=PLAINTEXT, source=str(video), cloud=f"127.0.0.1:{cloud.port}", stream_id="count",
                                    model=MODEL, mode="live", frames=5, window=1)
            streamers = []
            stats = await run_edge(settings, [slow_sink], pipeline=build_pipeline(settings, model),
                                   on_streamer=streamers.append)
            return stats, streamers[0].grabber.stats

    stats, grabbed = run(scenario())
    assert stats.results == 5 and len(outcomes) == 5
    assert grabbed.dropped > 0  # frames were dropped, and still five were answered


def test_the_annotated_video_keeps_the_source_frame_rate(engine, model, video, tmp_path) -> None:
    from splitinfer.services.edge.views import ViewRequest, build_views

    source = _clip(video, tmp_path / "clip25.avi", fps=25.0, frames=6)
    output = tmp_path / "annotated.mp4"

    async def scenario():
        async with running_cloud(engine) as cloud:
            settings = EdgeSettings(security=PLAINTEXT, source=str(source), cloud=f"127.0.0.1:{cloud.port}", stream_id="annotate",
                                    model=MODEL)
            views = build_views(ViewRequest(title="t", annotate=str(output)))
            try:
                await run_edge(settings, views.sinks, pipeline=build_pipeline(settings, model),
                               on_streamer=views.on_streamer)
            finally:
                views.close()
            return views

    views = run(scenario())
    sink = next(s for s in views.sinks if type(s).__name__ == "AnnotatedVideoSink")
    written = cv2.VideoCapture(str(output))
    try:
        assert written.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0, abs=0.01)  # was fixed at 10 fps
        assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    finally:
        written.release()
    h264 = cv2.VideoWriter(str(tmp_path / "probe.mp4"), cv2.VideoWriter_fourcc(*"avc1"), 10.0, (64, 64))
    assert sink.codec == ("avc1" if h264.isOpened() else "mp4v")  # H.264 whenever this OpenCV can write it
    h264.release()


def _detection(label: str, class_id: int, score: float, box) -> inference_pb2.Detection:
    x1, y1, x2, y2 = box
    return inference_pb2.Detection(x1=x1, y1=y1, x2=x2, y2=y2, class_id=class_id, label=label, score=score)


def test_labels_never_cover_each_other_and_the_best_comes_first() -> None:
    from splitinfer.services.edge.output import label_layout

    detections = [
        _detection("scissors", 76, 0.29, (300, 200, 380, 280)),  # the same object, labelled twice (per-class NMS)
        _detection("knife", 43, 0.61, (301, 201, 381, 279)),
        _detection("person", 0, 0.90, (290, 190, 420, 400)),     # a nearby box whose label would collide
        _detection("cup", 41, 0.40, (310, 195, 350, 230)),
        _detection("chair", 56, 0.35, (0, 0, 60, 60)),           # at the frame's edge
    ]
    placed = label_layout(detections, 768, 432)
    texts = [text for _, text, _ in placed]
    assert texts[0].startswith("person 0.90")
    assert "knife 0.61 | scissors 0.29" in texts and not any(t.startswith("scissors") for t in texts)
    rects = [rect for _, _, rect in placed]
    for i, a in enumerate(rects):
        assert 0 <= a[0] < a[2] <= 768 and 0 <= a[1] < a[3] <= 432
        for b in rects[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert len(placed) == 4  # one label per object


def test_a_tracked_objects_label_carries_its_track_id() -> None:
    from splitinfer.services.edge.output import label_layout

    tracked = _detection("person", 0, 0.90, (290, 190, 420, 400))
    tracked.track_id = 7
    untracked = _detection("cup", 41, 0.40, (10, 10, 50, 50))
    texts = [text for _, text, _ in label_layout([tracked, untracked], 768, 432)]
    assert texts == ["person #7 0.90", "cup 0.40"]


def test_edge_metrics_count_frames_bytes_stages_and_serve_only_metrics(engine, model, video) -> None:
    from splitinfer.services.edge.views import ViewRequest, build_views
    from splitinfer.services.prometheus import MetricsHttpServer

    async def scenario():
        async with running_cloud(engine, metrics_port=0, metrics_host="127.0.0.1") as cloud:
            settings = EdgeSettings(security=PLAINTEXT, source=str(video), cloud=f"127.0.0.1:{cloud.port}", stream_id="metrics",
                                    model=MODEL, frames=4)
            views = build_views(ViewRequest(title="t", metrics_port=0))
            stats = await run_edge(settings, views.sinks, pipeline=build_pipeline(settings, model),
                                   on_streamer=views.on_streamer)
            edge_metrics = next(s for s in views.sinks if type(s).__name__ == "EdgeMetrics")
            server = MetricsHttpServer(edge_metrics.exposition, "127.0.0.1", 0)
            await server.start()
            loop = asyncio.get_running_loop()
            try:
                edge = await loop.run_in_executor(None, _http, f"http://127.0.0.1:{server.port}/metrics")
            finally:
                await server.stop()
            base = f"http://127.0.0.1:{cloud.metrics_port}"
            answers = {}
            for path, method in (("/metrics", "GET"), ("/", "GET"), ("/anything", "GET"), ("/metrics", "POST")):
                answers[(path, method)] = await loop.run_in_executor(None, _http, base + path, method)
            bound = cloud._metrics_http._server.sockets[0].getsockname()[0]
            return stats, edge, answers, bound

    stats, (edge_status, edge_text), answers, bound = run(scenario())
    assert edge_status == 200
    assert 'splitinfer_edge_frames_total{outcome="OK"} 4.0' in edge_text
    assert f"splitinfer_edge_payload_bytes_total {float(stats.payload_bytes)}" in edge_text
    for stage in ("preprocess", "head", "encode", "decode", "tail"):
        assert f'splitinfer_edge_stage_seconds_count{{stage="{stage}"}} 4.0' in edge_text
    for series in ("splitinfer_edge_latency_seconds_count 4.0", "splitinfer_edge_reconnects_total 0.0",
                   "splitinfer_edge_frame_rate ", "splitinfer_edge_bit_rate ", "process_cpu_seconds_total",
                   'splitinfer_build_info{component="edge"'):
        assert series in edge_text, series
    assert "_created" not in edge_text

    status, cloud_text = answers[("/metrics", "GET")]
    assert status == 200 and bound == "127.0.0.1"
    assert "_created" not in cloud_text  # was: a *_created series per counter and histogram
    assert "process_resident_memory_bytes" in cloud_text and 'splitinfer_build_info{component="cloud"' in cloud_text
    assert "splitinfer_end_to_end_seconds_count 4.0" in cloud_text
    assert "outcome (OK or a gRPC status code name)" in cloud_text and 'outcome="OK"' in cloud_text
    assert answers[("/", "GET")][0] == 404 and answers[("/anything", "GET")][0] == 404
    assert answers[("/metrics", "POST")][0] == 405


def test_a_truncated_file_fails_the_edge_unless_allowed(engine, model, video, tmp_path) -> None:
    cut = _clip(video, tmp_path / "cut.avi", fps=10.0, frames=20, size=(192, 108), keep=0.4)

    async def scenario(allow: bool):
        async with running_cloud(engine) as cloud:
            settings = EdgeSettings(security=PLAINTEXT, source=str(cut), cloud=f"127.0.0.1:{cloud.port}", stream_id=f"cut-{allow}",
                                    model=MODEL, allow_truncated=allow)
            return await run_edge(settings, [], pipeline=build_pipeline(settings, model))

    with pytest.raises(CaptureError, match=r"ended after \d+ of the 20 frames its header reports"):
        run(scenario(False))
    stats = run(scenario(True))
    assert 0 < stats.results < 20
