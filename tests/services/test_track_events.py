"""Track events end to end: the shared video through a real edge pipeline, a real cloud, real gRPC and a real
nats-server; lines where the person in the video walks out give exactly the crossings the unsplit model's tracks
give, once each, to `splitinfer watch --events` and on the bus."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
import pytest

from splitinfer.channel_options import channel_options
from splitinfer.clients import ResultSubscriber
from splitinfer.results import event_from_cloudevent
from splitinfer.services.cloud.bus import STREAM_NAME
from splitinfer.services.cloud.tracking import Tracker
from splitinfer.services.cloud.zones import parse_zones
from splitinfer.services.edge.capture import FrameGrabber
from splitinfer.services.whole_model import detect
from splitinfer.bus_subjects import tracks_subject
from splitinfer.v1 import inference_pb2
from tests.services.conftest import CUT, PLAINTEXT, REPO, edge_pipeline, run, running_cloud
from tests.services.nats_server import nats_server  # noqa: F401 - a fixture
from tests.services.test_bad_input import Stream, frame_request
from tests.services.test_node_consumer import node_example  # noqa: F401 - a fixture

pytest.importorskip("supervision", reason="tracking needs the tracks extra: pip install -e '.[tracks]'")

STREAM = "site-a/door-cam"
# The person who stood in front of the camera walks out to the right between these frames (bottom centre of the
# box: x 446 at frame 178, 523 at 186, 560 at 187, 599 at 190, 662 at 191): two lines, drawn bottom to top, are
# crossed forward once each, 20 pixels or more from where the walker is in the frames around.
FIRST, LAST = 178, 197
ZONES = f"""\
streams:
  {STREAM}:
    lines:
      - name: exit
        points: [[540, 432], [540, 200]]
      - name: street
        points: [[630, 432], [630, 200]]
"""
RESEND_AFTER = 6  # the edge reconnects after this many frames and resends the last one


def crossings(events) -> list[tuple[int, str, str, int]]:
    return [(e.frame_id, e.name, e.direction, e.count) for e in events
            if e.kind == inference_pb2.TRACK_EVENT_KIND_LINE_CROSSED]


@pytest.fixture(scope="module")
def segment(model, video):
    """The segment's frames as the edge codes them (features at the pinned cut) and the unsplit model's crossings."""
    pipeline = edge_pipeline(model, CUT)
    coded, unsplit = [], []
    with FrameGrabber(str(video), max_frames=LAST + 1) as grabber:
        for index, frame in enumerate(grabber.frames()):
            if index >= FIRST:
                coded.append(pipeline.encode(pipeline.run_head(frame)))
                unsplit.append(detect(model, frame.image)[0])
    zones = parse_zones(ZONES)
    tracker = Tracker(lambda: zones)
    expected = []
    for offset, (message, found) in enumerate(zip(coded, unsplit)):
        result = inference_pb2.InferenceResult(stream_id=STREAM, frame_id=offset)
        result.capture.CopyFrom(message.capture)
        result.detections.extend(inference_pb2.Detection(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, class_id=d.class_id,
                                                         label=d.label, score=d.score) for d in found)
        expected += tracker.observe(result)
    return coded, crossings(expected)


async def _watch_events(address: str, count: int) -> list[dict]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "splitinfer.cli", "watch", "--plaintext", "--cloud", address, "--stream", STREAM,
        "--events", "--format", "json", "--after-sequence", "1", "--count", str(count), "--timeout", "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO))
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert "results and track events" in err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


async def _bus_events(url: str) -> list[inference_pb2.TrackEvent]:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(STREAM_NAME)
    events = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(STREAM_NAME, sequence)
        if message.subject == tracks_subject(STREAM):
            assert message.headers["Nats-Msg-Id"] == json.loads(message.data)["id"]
            events.append(event_from_cloudevent(json.loads(message.data)))
    await nc.close()
    return events


@pytest.mark.slow
async def _node_events(folder: Path | None, url: str, count: int) -> list[dict] | None:
    """The track events as the Node.js consumer example reads them from the bus (None without node and npm)."""
    if folder is None:
        return None
    node = await asyncio.create_subprocess_exec(
        "node", "consume.js", "--nats", url, "--stream", STREAM, "--tracks", "--count", str(count), cwd=folder,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(node.communicate(), 60)
    assert node.returncode == 0, err.decode()
    return [json.loads(line)["event"] for line in out.decode().splitlines()]


@pytest.mark.slow
def test_line_crossings_match_the_unsplit_models_tracks_once_each_in_grpc_watch_and_on_the_bus(
        engine, segment, nats_server, tmp_path: Path, request) -> None:
    coded, expected = segment
    try:
        node_folder = request.getfixturevalue("node_example")
    except pytest.skip.Exception:
        node_folder = None  # the rest of the test holds without the Node.js example
    assert [(name, direction) for _, name, direction, _ in expected] == [("exit", "forward"), ("street", "forward")]
    zones_file = tmp_path / "zones.yaml"
    zones_file.write_text(ZONES)

    async def scenario():
        async with running_cloud(engine, nats=nats_server.url, zones=zones_file, tracking="on") as cloud:
            address = f"127.0.0.1:{cloud.port}"
            async with ResultSubscriber(address, [STREAM], events=True, security=PLAINTEXT) as subscriber, \
                    ResultSubscriber(address, [STREAM], security=PLAINTEXT) as results_only:
                await subscriber.wait_subscribed()
                await results_only.wait_subscribed()
                answers = []
                async with grpc.aio.insecure_channel(address, options=channel_options()) as channel:
                    stream = Stream(channel)
                    await stream.open(stream_id=STREAM)
                    for frame_id, frame in enumerate(coded[:RESEND_AFTER]):
                        await stream.send(frame_request(frame, frame_id))
                        answers.append((await stream.receive()).result)
                    await stream.call.done_writing()
                    # A reconnect that resends the last frame, then goes on: the same tracks, no event twice.
                    stream = Stream(channel)
                    await stream.open(stream_id=STREAM)
                    for frame_id in range(RESEND_AFTER - 1, len(coded)):
                        await stream.send(frame_request(coded[frame_id], frame_id))
                        answer = (await stream.receive()).result
                        if frame_id >= RESEND_AFTER:
                            answers.append(answer)
                    await stream.call.done_writing()
                items, plain = [], []
                while len([i for i in items if i.event is None]) < len(coded):
                    items.append(await asyncio.wait_for(anext(aiter(subscriber)), 30))
                for _ in coded:
                    plain.append(await asyncio.wait_for(anext(aiter(results_only)), 30))
            # --after-sequence 1 replays all but the bus's first message (the tracker's start, which comes just
            # before the first result): the results and the crossings.
            watched = await _watch_events(address, len(coded) + len(expected))
            metrics = cloud.metrics.registry
            counted = {name: metrics.get_sample_value("splitinfer_zone_events_total", {
                "stream": STREAM, "name": name, "kind": "line_crossed", "direction": "forward"}) for name in
                ("exit", "street")}
        on_bus = await _bus_events(nats_server.url)
        return answers, items, plain, watched, on_bus, await _node_events(node_folder, nats_server.url, len(on_bus)), \
            counted

    answers, items, plain, watched, on_bus, from_node, counted = run(scenario(), timeout=600)
    # Every result carries the cloud's track ids: one walker, one id, across the reconnect.
    best = [max((d for d in r.detections if d.label == "person"), key=lambda d: d.score)
            for r in answers if any(d.label == "person" for d in r.detections)]
    assert len({d.track_id for d in best} - {0}) == 1, [d.track_id for d in best]
    assert sum(1 for d in best if d.track_id) >= len(best) - 3  # faint boxes as the walker leaves may go unmatched
    # gRPC: the results in order with the events between them; a results-only subscriber gets no event.
    grpc_events = [i.event for i in items if i.event is not None]
    assert [i.result for i in items if i.event is None] == answers
    assert all(i.event is None for i in plain) and [i.result for i in plain] == answers
    assert grpc_events[0].kind == inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED
    assert crossings(grpc_events) == expected
    sequences = [i.sequence for i in items]
    assert sequences == sorted(set(sequences))
    # watch --events: the same events, as JSON lines, beside the results.
    watched_events = [event_from_cloudevent({"data": line["track_event"]}) for line in watched if "track_event" in line]
    assert crossings(watched_events) == expected
    assert [e.id for e in watched_events] == [e.id for e in grpc_events[1:]]
    # The bus: each event once (the resent frame made none), CloudEvents with the event id as Nats-Msg-Id.
    assert [e.id for e in on_bus] == [e.id for e in grpc_events]
    assert len({e.id for e in on_bus}) == len(on_bus)
    assert counted == {"exit": 1.0, "street": 1.0}
    if from_node is not None:  # the Node.js consumer on the bus: the same CloudEvents
        assert [e["id"] for e in from_node] == [e.id for e in on_bus]
        assert [e["type"] for e in from_node if e["data"]["kind"] == "TRACK_EVENT_KIND_LINE_CROSSED"] == \
            ["io.splitinfer.v1.TrackEvent.line_crossed"] * len(expected)


def _detections_frame(frame_id: int, x: float) -> inference_pb2.InferRequest:
    """A detections-mode frame: one person whose box stands at x (what an edge running the whole model sends)."""
    frame = inference_pb2.FeatureFrame(frame_id=frame_id)
    frame.capture.capture_time.FromNanoseconds(1_700_000_000 * 10**9 + frame_id * 100_000_000)
    frame.capture.image_width, frame.capture.image_height = 768, 432
    frame.detections.detections.add(x1=x, y1=100, x2=x + 80, y2=400, class_id=0, label="person", score=0.9)
    return inference_pb2.InferRequest(frame=frame)


def test_a_stream_that_moves_to_another_replica_resumes_its_tracks_from_the_bus_and_loses_no_crossing(
        engine, nats_server, tmp_path: Path) -> None:
    """The tracker's state lives in the replica: another one resumes the stream's tracks from its last result on
    the bus (docs/TRACKS.md), with the same ids and no TRACKS_RESTARTED; crossings there are still found.
    (tests/services/test_track_failover.py kills a cloud process with -9 mid-crossing.)"""
    zones_file = tmp_path / "zones.yaml"
    zones_file.write_text(f"streams:\n  {STREAM}:\n    lines:\n      - name: exit\n"
                          "        points: [[500, 432], [500, 0]]\n")
    start = inference_pb2.InferRequest(start=inference_pb2.StreamStart(
        stream_id=STREAM, model=engine.model_name, partition=inference_pb2.PARTITION_DETECTIONS))

    async def stream_to(cloud, frame_ids) -> list:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cloud.port}", options=channel_options()) as channel:
            stream = Stream(channel)
            await stream.send(start)
            assert (await stream.receive()).WhichOneof("kind") == "accepted"
            answers = []
            for frame_id in frame_ids:
                await stream.send(_detections_frame(frame_id, 105 + 30 * frame_id))
                answers.append((await stream.receive()).result)
            await stream.call.done_writing()
            return answers

    async def scenario():
        config = dict(nats=nats_server.url, zones=zones_file, tracking="on")
        async with running_cloud(engine, **config) as replica_a:
            before = await stream_to(replica_a, range(0, 8))
        async with running_cloud(engine, **config) as replica_b:  # replica a is gone; the edge resumes here
            after = await stream_to(replica_b, range(8, 16))
            # From after the bus's first message (the tracker's start): 16 results and 1 crossing.
            async with ResultSubscriber(f"127.0.0.1:{replica_b.port}", [STREAM], after_sequence=1, events=True,
                                        security=PLAINTEXT) as subscriber:
                items = [await asyncio.wait_for(anext(aiter(subscriber)), 30) for _ in range(16 + 1)]
        return before, after, [i.event for i in items if i.event is not None]

    before, after, events = run(scenario(), timeout=300)
    assert {d.track_id for r in before for d in r.detections} == {1}
    assert {d.track_id for r in after for d in r.detections} == {1}  # the same track, resumed
    restarts = [e.frame_id for e in events if e.kind == inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED]
    assert restarts == []  # the stream's start (frame 0) is the bus's first message, before after_sequence 1
    # The box's bottom centre (x 145 + 30 * frame) passes 500 between frames 11 and 12, on replica b.
    assert crossings(events) == [(12, "exit", "forward", 1)]
