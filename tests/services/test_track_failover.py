"""Done when (#21, failover): two cloud processes on one nats-server; the real edge streams the shared video's
walker in file mode to cloud A, which is killed with -9 as the walker nears the lines; the edge resumes on cloud B.
The bus then holds every line crossing the unsplit model's tracks give, once each, with the walker's one track id
on both sides of the kill: B resumed the stream's tracks from its last result on the bus (Tracker.resume). And
ResultBus.last_result, which reads that result, against a real nats-server: none, another stream's, a broken one."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from splitinfer.bus_subjects import results_subject, tracks_subject
from splitinfer.results import event_from_cloudevent
from splitinfer.services.cloud.bus import STREAM_NAME
from splitinfer.services.cloud.tracking import Tracker
from splitinfer.services.cloud.zones import parse_zones
from splitinfer.services.edge.app import EdgeSettings, build_pipeline, run_edge
from splitinfer.services.edge.capture import FrameGrabber
from splitinfer.services.whole_model import detect
from splitinfer.v1 import inference_pb2
from tests.services.conftest import MODEL, PLAINTEXT, free_port, run
from tests.services.nats_server import nats_server  # noqa: F401 - a fixture
from tests.services.test_track_events import LAST, ZONES, crossings

pytest.importorskip("supervision", reason="tracking needs the tracks extra: pip install -e '.[tracks]'")

STREAM = "site-a/door-cam"  # the stream the lines of test_track_events' ZONES are for
CLIP_FIRST = 160  # the clip: the video's frames CLIP_FIRST..LAST, the walker's exit (178-197) in its second half
KILL_AFTER = 187 - CLIP_FIRST  # results the edge has when A dies: the walker is between the lines (x 560 at 187)


@pytest.fixture(scope="module")
def clip(video, model, tmp_path_factory) -> tuple[Path, list[tuple[int, str, str, int]]]:
    """The clip as a lossless file (FFV1: the edge reads the video's exact pixels), and the crossings the unsplit
    model's tracks give on it."""
    import cv2

    path = tmp_path_factory.mktemp("clip") / "walker.avi"
    zones = parse_zones(ZONES)
    tracker = Tracker(lambda: zones)
    events = []
    with FrameGrabber(str(video), max_frames=LAST + 1) as grabber:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (768, 432))
        if not writer.isOpened():
            pytest.skip("this OpenCV build cannot write FFV1 (lossless) video, which the clip needs")
        try:
            for index, frame in enumerate(grabber.frames()):
                if index < CLIP_FIRST:
                    continue
                writer.write(frame.image)
                result = inference_pb2.InferenceResult(stream_id=STREAM, frame_id=index - CLIP_FIRST)
                result.capture.capture_time.FromNanoseconds(frame.wall_time_ns)
                result.detections.extend(
                    inference_pb2.Detection(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, class_id=d.class_id, label=d.label,
                                            score=d.score) for d in detect(model, frame.image)[0])
                events += tracker.observe(result)
        finally:
            writer.release()
    assert len(crossings(events)) == 2, "the unsplit model's walker should cross both lines once"
    return path, crossings(events)


async def _bus(url: str) -> tuple[list[inference_pb2.InferenceResult], list[inference_pb2.TrackEvent]]:
    """The stream's results and track events on the bus, in the bus's order."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(STREAM_NAME)
    results, events = [], []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(STREAM_NAME, sequence)
        if message.subject == tracks_subject(STREAM):
            events.append(event_from_cloudevent(json.loads(message.data)))
        elif message.subject == results_subject(STREAM):
            results.append(inference_pb2.InferenceResult.FromString(message.data))
    await nc.close()
    return results, events


@pytest.mark.slow
def test_a_kill_9_mid_crossing_loses_no_event_and_keeps_the_walkers_track_id(
        clip, model, cloud_process, nats_server, tmp_path: Path) -> None:
    path, expected = clip
    zones = tmp_path / "zones.yaml"
    zones.write_text(ZONES)
    flags = ("--nats", nats_server.url, "--zones", str(zones), "--tracking", "on")
    cloud_a, cloud_b = cloud_process(free_port(), *flags), cloud_process(free_port(), *flags)
    cloud_a.wait_serving()
    cloud_b.wait_serving()
    outcomes, killed = [], []

    def kill_a(outcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == KILL_AFTER and not killed:
            cloud_a.process.send_signal(signal.SIGKILL)
            cloud_a.process.wait(timeout=30)
            killed.append(outcome.result.frame_id)

    # One target, two replicas: gRPC's pick_first stays on A while it lives, then reconnects to B.
    settings = EdgeSettings(source=str(path), cloud=f"ipv4:127.0.0.1:{cloud_a.port},127.0.0.1:{cloud_b.port}",
                            stream_id=STREAM, model=MODEL, frames=None, window=4, mode="file", give_up_after_s=120,
                            security=PLAINTEXT)

    async def scenario():
        stats = await run_edge(settings, [kill_a], pipeline=build_pipeline(settings, model))
        return stats, await _bus(nats_server.url)

    stats, (results, events) = run(scenario(), timeout=400)
    frames = LAST + 1 - CLIP_FIRST
    assert killed, "cloud A was never killed"
    assert stats.reconnects >= 1 and stats.results == frames
    # Every frame's result once on the bus; every event once.
    assert sorted(r.frame_id for r in results) == list(range(frames))
    assert len({e.id for e in events}) == len(events)
    # The tracker started once (frame 0, on A): B went on with A's tracks instead of starting afresh.
    restarts = [e.frame_id for e in events if e.kind == inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED]
    assert restarts == [0], restarts
    # Exactly the unsplit model's crossings, with their counts, and one walker crossing both lines.
    assert crossings(events) == expected
    walker = {e.track_id for e in events if e.kind == inference_pb2.TRACK_EVENT_KIND_LINE_CROSSED}
    assert len(walker) == 1 and 0 not in walker
    # The walker's id is the same in the results before and after the kill.
    after = [r for r in results if r.frame_id > killed[0]]
    assert any(d.track_id in walker for r in after for d in r.detections)
    before = [r for r in results if r.frame_id <= killed[0] - 4]
    assert any(d.track_id in walker for r in before for d in r.detections)
    assert "tracks resumed from its last result on the bus" in cloud_b.log.read_text(), cloud_b.log.read_text()


def test_a_replica_resumes_from_the_streams_last_result_on_the_bus_and_never_from_a_bad_one(nats_server) -> None:
    from splitinfer.services.cloud.bus import ResultBus

    async def scenario():
        import nats

        bus = ResultBus(nats_server.url, capacity=16, max_bytes=1 << 20)
        await bus.start()
        try:
            nothing = await bus.last_result(STREAM)
            for frame_id in (0, 1):
                result = inference_pb2.InferenceResult(stream_id=STREAM, frame_id=frame_id)
                result.detections.add(x1=1, y1=2, x2=30, y2=40, class_id=0, label="person", score=0.9, track_id=7)
                await bus.publish(result)
            last = await bus.last_result(STREAM)
            other = await bus.last_result("site-a/another")
            nc = await nats.connect(nats_server.url)  # a hostile or broken publisher on the stream's subject
            await nc.jetstream().publish(results_subject(STREAM), b"\xff not a result")
            await nc.close()
            broken = await bus.last_result(STREAM)
        finally:
            await bus.aclose()
        return nothing, last, other, broken

    nothing, last, other, broken = run(scenario())
    assert nothing is None and other is None and broken is None
    assert last.frame_id == 1 and [d.track_id for d in last.detections] == [7]
