"""Issue #18 item 1: three partitions in one stream protocol, over real gRPC (plaintext and TLS).

For each partition a real edge streams the shared video to a real cloud; the cloud is killed with SIGKILL in the
middle of a group of pictures and restarted, and every frame still gets exactly one result; a damaged pixel
packet is refused in-band and the stream recovers at the next key frame; an edge that sends malformed
detections has each of them refused in-band while the stream goes on, and nothing malformed reaches subscribers.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import zlib
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from splitinfer.channel_options import channel_options
from splitinfer.channel_security import ChannelSecurity
from splitinfer.clients import ResultSubscriber
from splitinfer.services.cloud.edge_detections import checked_detections
from splitinfer.services.cloud.tracking import tracking_available
from splitinfer.services.edge.app import EdgeSettings, build_pipeline, run_edge
from splitinfer.services.edge.capture import FrameGrabber
from splitinfer.services.fidelity import Fidelity, compare
from splitinfer.v1 import inference_pb2
from splitinfer.wire import coded_bytes
from tests.services.certificates import Authority
from tests.services.conftest import MODEL, PLAINTEXT, free_port, run, running_cloud
from tests.services.nats_server import nats_server  # noqa: F401 - a fixture
from tests.services.test_bad_input import Stream
from tests.services.test_security import error_reason

pytest.importorskip("av", reason="the pixels partition needs PyAV (pip install 'splitinfer[pixels]')")

PARTITIONS = ("pixels", "features", "detections")
PARTITION_OF = {"pixels": inference_pb2.PARTITION_PIXELS, "features": inference_pb2.PARTITION_FEATURES,
                "detections": inference_pb2.PARTITION_DETECTIONS}
CUT_OF = {"pixels": "input", "features": "60", "detections": "output"}  # 60: the model's default cut
INVALID_ARGUMENT, FAILED_PRECONDITION = 3, 9


class Tap:
    """The real edge pipeline, recording each frame message it sends and letting a test change it first (a packet
    damaged on the way, a hostile edge). Every other attribute is the pipeline's."""

    def __init__(self, pipeline, change: Callable[[inference_pb2.FeatureFrame], None] | None = None) -> None:
        self.pipeline = pipeline
        self.change = change
        self.sent: list[inference_pb2.FeatureFrame] = []

    def __getattr__(self, name: str):
        return getattr(self.pipeline, name)

    def encode(self, head):
        message = self.pipeline.encode(head)
        if message is not None:
            if self.change is not None:
                self.change(message)
            self.sent.append(message)
        return message


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    ca = Authority(tmp_path_factory.mktemp("pki"), "partitions-ca")
    return {"ca": ca, "server": ca.issue("cloud.test", server=True, file_stem="server")}


def security_of(transport: str, pki: dict) -> ChannelSecurity:
    return PLAINTEXT if transport == "plaintext" else ChannelSecurity(ca_file=pki["ca"].ca)


def cloud_config(transport: str, pki: dict) -> dict:
    return {} if transport == "plaintext" else {"tls_cert": pki["server"].cert, "tls_key": pki["server"].key}


def edge_settings(video: Path, address: str, security: ChannelSecurity, partition: str, **overrides) -> EdgeSettings:
    values = dict(security=security, source=str(video), cloud=address, stream_id=f"cam-{partition}", model=MODEL,
                  mode="file", partition=partition, give_up_after_s=120)
    values.update(overrides)
    return EdgeSettings(**values)


def stream_once(engine, model, video: Path, partition: str, change=None, *, transport: str = "plaintext",
                pki: dict | None = None, **overrides):
    """A real edge streams to an in-process cloud: (the tap, the results in order, the edge's counters)."""
    async def scenario():
        async with running_cloud(engine, **cloud_config(transport, pki or {})) as server:
            settings = edge_settings(video, f"127.0.0.1:{server.port}", security_of(transport, pki or {}), partition,
                                     **overrides)
            tap = Tap(build_pipeline(settings, model), change)
            outcomes = []
            stats = await run_edge(settings, [outcomes.append], pipeline=tap)
            return tap, [o.result for o in outcomes], stats

    return run(scenario(), timeout=300)


def without_track_ids(detections) -> list[inference_pb2.Detection]:
    """Published detections as an edge may send them: the track ids the cloud's tracker added, cleared."""
    copies = [inference_pb2.Detection() for _ in detections]
    for copy, detection in zip(copies, detections):
        copy.CopyFrom(detection)
        copy.track_id = 0
    return copies


def sent_bytes(message: inference_pb2.FeatureFrame, partition: str) -> int:
    """The payload bytes of a frame as the edge sent it, counted by partition (features: the coded tensors as
    serialized, quantizers and headers included)."""
    if partition == "pixels":
        return len(message.pixels.data)
    if partition == "detections":
        return message.detections.ByteSize()
    return coded_bytes(message.tensors)


def unsplit_detections(model, video: Path, count: int) -> list[list]:
    """What the whole model finds on the original frames (the reference every partition is compared with)."""
    found = []
    with FrameGrabber(str(video), max_frames=count) as grabber:
        for frame in grabber.frames():
            x, info = model.preprocess(frame.image)
            found.append(model.postprocess(model(x), info))
    return found


def matched_fraction(results, reference) -> float:
    """Of the unsplit model's detections, the fraction a result has too (same class, IoU >= 0.5)."""
    total = sum((compare(expected, result.detections) for result, expected in zip(results, reference)),
                Fidelity(0, 0, 0, 0))
    return total.matched / total.reference


# -- each partition, end to end ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["plaintext", "tls"])
@pytest.mark.parametrize("partition", PARTITIONS)
def test_each_partition_streams_the_shared_video_and_every_result_says_where_it_came_from(
        model, engine, video, pki, partition, transport) -> None:
    frames = 10

    async def scenario():
        async with running_cloud(engine, **cloud_config(transport, pki)) as server:
            address, security = f"127.0.0.1:{server.port}", security_of(transport, pki)
            settings = edge_settings(video, address, security, partition, frames=frames)
            tap = Tap(build_pipeline(settings, model))
            outcomes = []
            async with ResultSubscriber(address, [settings.stream_id], security=security) as subscriber:
                await subscriber.wait_subscribed()
                stats = await run_edge(settings, [outcomes.append], pipeline=tap)
                published = [(await asyncio.wait_for(anext(aiter(subscriber)), 30)).result for _ in range(frames)]
            return tap, outcomes, stats, published, server.metrics.exposition().decode()

    tap, outcomes, stats, published, metrics = run(scenario(), timeout=300)
    assert f'splitinfer_partition_frames_total{{partition="{partition}"}} {frames}.0' in metrics
    results = [outcome.result for outcome in outcomes]
    assert [r.frame_id for r in results] == list(range(frames)) and stats.frame_errors == 0
    assert all(not r.HasField("error") for r in results)
    assert {(r.origin.partition, r.origin.cut) for r in results} == {(PARTITION_OF[partition], CUT_OF[partition])}
    # Bytes are counted alike for every partition: what the frame carried.
    assert [r.payload_bytes for r in results] == [sent_bytes(m, partition) for m in tap.sent]
    assert all(r.payload_bytes > 0 for r in results)
    assert published == results  # subscribers get exactly what the edge got
    reference = unsplit_detections(model, video, frames)
    if partition == "detections":  # the cloud publishes the edge's own detections, checked and unchanged
        assert [[(d.class_id, d.label) for d in r.detections] for r in results] == \
            [[(e.class_id, e.label) for e in expected] for expected in reference]
        assert matched_fraction(results, reference) == 1.0
    else:
        assert matched_fraction(results, reference) >= 0.7
    if partition == "pixels":
        coding = results[0].origin.pixel_coding
        assert (coding.codec, coding.width, coding.height, coding.key_interval) == ("h264", 320, 320, 30)
        assert [m.pixels.key_frame for m in tap.sent] == [True] + [False] * (frames - 1)


# -- kill -9 of the cloud in the middle of a group of pictures -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["plaintext", "tls"])
@pytest.mark.parametrize("partition", PARTITIONS)
def test_a_cloud_killed_mid_gop_and_restarted_still_answers_every_frame_exactly_once(
        model, video, cloud_process, pki, partition, transport) -> None:
    port = free_port()
    tls = () if transport == "plaintext" else ("--tls-cert", str(pki["server"].cert), "--tls-key",
                                               str(pki["server"].key))
    first = cloud_process(port, *tls)
    first.wait_serving()
    frames, outcomes, restarted = 20, [], []

    def kill_and_restart(outcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 6 and not restarted:
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=30)
            restarted.append(cloud_process(port, *tls))

    overrides = {"intra_period": 8} if partition == "pixels" else {}  # frames 6..9 are in flight: mid-GOP
    settings = edge_settings(video, f"127.0.0.1:{port}", security_of(transport, pki), partition, frames=frames,
                             window=4, **overrides)
    tap = Tap(build_pipeline(settings, model))
    stats = run(run_edge(settings, [kill_and_restart], pipeline=tap), timeout=300)
    assert restarted, "the cloud was never killed"
    assert [o.result.frame_id for o in outcomes] == list(range(frames))
    assert all(not o.result.HasField("error") for o in outcomes), [o.result.error for o in outcomes]
    assert stats.reconnects >= 1 and stats.lost_on_reconnect == 0
    if partition == "pixels":
        # Frames were in flight (the cloud is the slower side), and the resend after the reconnect started from a
        # key frame that the key interval did not call for.
        sent_ids = [m.frame_id for m in tap.sent]
        again = next(i for i in range(1, len(sent_ids)) if sent_ids[i] <= sent_ids[i - 1])
        assert stats.resent >= 1 and tap.sent[again].pixels.key_frame and sent_ids[again] % 8 != 0


# -- a damaged pixel packet -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["plaintext", "tls"])
def test_a_damaged_pixel_packet_is_refused_in_band_and_the_stream_recovers_at_the_next_key_frame(
        model, engine, video, pki, transport) -> None:
    frames, damaged = 16, 4

    def damage(message: inference_pb2.FeatureFrame) -> None:
        if message.frame_id == damaged and not getattr(damage, "done", False):
            data = bytearray(message.pixels.data)
            data[len(data) // 2] ^= 0x5A  # flipped on the way: the CRC no longer matches
            message.pixels.data = bytes(data)
            damage.done = True  # type: ignore[attr-defined]

    tap, results, stats = stream_once(engine, model, video, "pixels", damage, transport=transport, pki=pki,
                                      frames=frames, intra_period=100)
    assert [r.frame_id for r in results] == list(range(frames))
    bad = results[damaged].error
    assert (bad.code, bad.reason, bad.intra_frame_requested) == \
        (INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_UNDECODABLE_PIXELS, True)
    assert "damaged" in bad.message
    # Frames coded against the lost picture before the edge heard of it are refused too, asking for a key frame;
    # the key frame the edge then sends (long before the key interval of 100) restores the stream for good.
    recovery = next(m.frame_id for m in tap.sent if m.frame_id > damaged and m.pixels.key_frame)
    assert recovery < 100
    for result in results[damaged + 1:recovery]:
        assert result.error.reason == inference_pb2.FRAME_ERROR_REASON_MISSING_REFERENCE
        assert result.error.intra_frame_requested
    assert all(not r.HasField("error") for r in results[:damaged] + results[recovery:])
    assert len(results[recovery:]) >= 5 and stats.frame_errors == recovery - damaged


# -- a hostile detections edge ---------------------------------------------------------------------------------


def _nan_box(message) -> None:
    message.detections.detections[0].x1 = math.nan


def _outside(message) -> None:
    message.detections.detections[0].x2 = message.capture.image_width + 50.0


def _unknown_class(message) -> None:
    message.detections.detections[0].class_id = 80


def _a_million(message) -> None:
    message.detections.detections.extend(inference_pb2.Detection() for _ in range(10**6))


def _negative_score(message) -> None:
    message.detections.detections[0].score = -0.5


def _other_label(message) -> None:
    message.detections.detections[0].label = "unicorn"


def _invented_track_id(message) -> None:
    message.detections.detections[0].track_id = 7  # identities are the cloud tracker's to assign


def tamper(message: inference_pb2.FeatureFrame) -> None:
    """A hostile edge: the frames named in HOSTILE get their malformation (frames without a detection stay as they
    are; the tests check that each hostile frame had one)."""
    if message.frame_id in HOSTILE and message.detections.detections:
        HOSTILE[message.frame_id][0](message)


HOSTILE = {2: (_nan_box, "not finite"), 3: (_outside, "not inside the 768x432 image"),
           4: (_unknown_class, "class id 80 is not one of the model's 80 classes"),
           5: (_a_million, "detections in one frame; at most 300 are accepted"),
           6: (_negative_score, "score -0.5 is not in (0, 1]"), 7: (_other_label, "label 'unicorn'"),
           8: (_invented_track_id, "track id 7 is set, but track ids are assigned by the cloud's tracker")}


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["plaintext", "tls"])
def test_malformed_detections_are_each_refused_in_band_and_never_reach_subscribers(
        model, engine, video, pki, transport) -> None:
    frames = 10

    async def scenario():
        async with running_cloud(engine, **cloud_config(transport, pki)) as server:
            address, security = f"127.0.0.1:{server.port}", security_of(transport, pki)
            settings = edge_settings(video, address, security, "detections", frames=frames)
            tap = Tap(build_pipeline(settings, model), tamper)
            outcomes = []
            async with ResultSubscriber(address, [settings.stream_id], security=security) as subscriber:
                await subscriber.wait_subscribed()
                await run_edge(settings, [outcomes.append], pipeline=tap)
                published = [(await asyncio.wait_for(anext(aiter(subscriber)), 30)).result for _ in range(frames)]
            return tap, [o.result for o in outcomes], published

    tap, results, published = run(scenario(), timeout=300)
    assert all(tap.sent[i].detections.detections for i in HOSTILE), "a tampered frame had no detection to tamper"
    assert [r.frame_id for r in results] == list(range(frames))
    for frame_id, (_, reason) in HOSTILE.items():
        error = results[frame_id].error
        assert (error.code, error.reason) == (INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_BAD_DETECTIONS)
        assert reason in error.message and not results[frame_id].detections
    good = [r for r in results if r.frame_id not in HOSTILE]
    assert good and all(not r.HasField("error") and r.detections for r in good)
    if tracking_available():  # the track ids consumers see are the cloud's own
        assert any(d.track_id for r in good for d in r.detections)
    # Consumers see the same: the good frames' detections, and for each bad frame an error without detections.
    assert published == results
    for result in published:
        checked_detections(without_track_ids(result.detections), width=result.capture.image_width,
                           height=result.capture.image_height, class_names=model.class_names)


# -- the protocol: old edges, bad starts, a pixels stream that starts mid-GOP -------------------------------------


async def _with_channel(engine, scenario):
    async with running_cloud(engine) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
            return await scenario(channel)


def test_an_edge_older_than_partitions_is_served_as_features_and_told_so(engine, model, video) -> None:
    from tests.services.conftest import encoded_frames
    from tests.services.test_bad_input import frame_request

    frame = encoded_frames(model, video, 1)[0]

    async def scenario(channel):
        stream = Stream(channel)
        accepted = await stream.open()  # a StreamStart without partition, as every edge sent before
        await stream.send(frame_request(frame, 0))
        return accepted, (await stream.receive()).result

    accepted, result = run(_with_channel(engine, scenario))
    assert accepted.partition == inference_pb2.PARTITION_FEATURES and list(accepted.tensor_names) == ["layer80"]
    assert not result.HasField("error") and result.detections
    assert (result.origin.partition, result.origin.cut) == (inference_pb2.PARTITION_FEATURES, "80")


@pytest.mark.parametrize(("start", "code", "reason"), [
    (dict(partition=7), grpc.StatusCode.INVALID_ARGUMENT, "BAD_PARTITION"),
    (dict(partition=inference_pb2.PARTITION_PIXELS), grpc.StatusCode.INVALID_ARGUMENT, "BAD_PIXEL_CODING"),
    (dict(partition=inference_pb2.PARTITION_PIXELS,
          pixel_coding=inference_pb2.PixelCoding(codec="vp9", width=320, height=320)),
     grpc.StatusCode.INVALID_ARGUMENT, "BAD_PIXEL_CODING"),
    (dict(partition=inference_pb2.PARTITION_PIXELS,
          pixel_coding=inference_pb2.PixelCoding(codec="h264", width=321, height=320)),
     grpc.StatusCode.INVALID_ARGUMENT, "BAD_PIXEL_CODING"),
    (dict(partition=inference_pb2.PARTITION_PIXELS, model="yolov3-tiny",
          pixel_coding=inference_pb2.PixelCoding(codec="h264", width=320, height=320)),
     grpc.StatusCode.FAILED_PRECONDITION, "UNKNOWN_MODEL_OR_CUT"),
])
def test_a_bad_partition_start_is_refused_before_any_frame(engine, start, code, reason) -> None:
    async def scenario(channel):
        stream = Stream(channel)
        fields = {"stream_id": "cam-1", "model": MODEL, **start}
        await stream.send(inference_pb2.InferRequest(start=inference_pb2.StreamStart(**fields)))
        try:
            await stream.receive()
        except grpc.aio.AioRpcError as exc:
            return exc.code(), error_reason(exc), exc.details()
        raise AssertionError("the start was accepted")

    got, got_reason, details = run(_with_channel(engine, scenario))
    assert (got, got_reason) == (code, reason), details


def _pixel_start(stream_id: str = "cam-px") -> inference_pb2.InferRequest:
    return inference_pb2.InferRequest(start=inference_pb2.StreamStart(
        stream_id=stream_id, model=MODEL, partition=inference_pb2.PARTITION_PIXELS,
        pixel_coding=inference_pb2.PixelCoding(codec="h264", width=320, height=320)))


def _pixel_frames(model, video: Path, count: int, key_interval: int = 100, restart_at: tuple[int, ...] = ()
                  ) -> list[inference_pb2.FeatureFrame]:
    """The video's first frames as the edge's pixels pipeline codes them (a key frame at 0, each restart and each
    key interval)."""
    from splitinfer.services.edge.partitions import PixelPipeline
    from splitinfer.services.pixels import PixelSettings

    pipeline = PixelPipeline(model, PixelSettings(key_interval=key_interval))
    coded = []
    with FrameGrabber(str(video), max_frames=count) as grabber:
        for frame in grabber.frames():
            if frame.sequence in restart_at:
                pipeline.restart_coding()
            coded.append(pipeline.encode(pipeline.run_head(frame)))
    return coded


def test_a_pixels_stream_without_its_reference_asks_for_a_key_frame_and_garbage_is_refused(model, engine,
                                                                                           video) -> None:
    frames = _pixel_frames(model, video, 6, restart_at=(2,))
    garbage = inference_pb2.FeatureFrame()
    garbage.CopyFrom(frames[4])
    garbage.pixels.data = b"\x00\x00\x00\x01" + bytes(range(256)) * 4  # not H.264, with a matching CRC
    garbage.pixels.data_crc32 = zlib.crc32(garbage.pixels.data)
    garbage.pixels.key_frame = True
    garbage.ClearField("reference_frame_id")
    empty = inference_pb2.FeatureFrame()
    empty.CopyFrom(frames[5])
    empty.ClearField("pixels")

    async def scenario(channel):
        stream = Stream(channel)
        await stream.send(_pixel_start())
        accepted = (await stream.receive()).accepted
        answers = []
        # An inter frame first (its reference was never sent), then a key frame and its successor, then garbage.
        for frame in (frames[1], frames[2], frames[3], garbage, empty):
            await stream.send(inference_pb2.InferRequest(frame=frame))
            answers.append((await stream.receive()).result)
        return accepted, answers

    accepted, (orphan, key, inter, refused, missing) = run(_with_channel(engine, scenario))
    assert accepted.partition == inference_pb2.PARTITION_PIXELS and not accepted.tensor_names
    assert orphan.error.reason == inference_pb2.FRAME_ERROR_REASON_MISSING_REFERENCE
    assert orphan.error.intra_frame_requested and orphan.error.code == FAILED_PRECONDITION
    assert frames[2].pixels.key_frame and not frames[3].pixels.key_frame
    assert not key.HasField("error") and not inter.HasField("error") and key.detections
    assert inter.payload_bytes == len(frames[3].pixels.data) and inter.origin.cut == "input"
    for result in (refused, missing):
        assert result.error.reason == inference_pb2.FRAME_ERROR_REASON_UNDECODABLE_PIXELS, result.error
        assert result.error.intra_frame_requested and not result.detections


def test_the_pixel_decoder_decodes_from_a_key_frame_on_and_refuses_what_it_cannot(model, video) -> None:
    from splitinfer.services.pixels import PixelCodingError, PixelDecoder

    frames = _pixel_frames(model, video, 6, key_interval=3)
    decoder = PixelDecoder()

    def decode(frame):
        reference = frame.reference_frame_id if frame.HasField("reference_frame_id") else None
        return decoder.decode(frame.frame_id, frame.pixels.data, frame.pixels.data_crc32, frame.pixels.key_frame,
                              reference, (320, 320))

    assert [f.pixels.key_frame for f in frames] == [True, False, False, True, False, False]
    assert decode(frames[0]).shape == (320, 320, 3) and decode(frames[1]).shape == (320, 320, 3)
    with pytest.raises(PixelCodingError, match="holds 1") as skipped:
        decode(frames[4])  # frame 2 and 3 were never decoded
    assert skipped.value.missing_reference
    with pytest.raises(PixelCodingError, match="holds none"):
        decode(frames[2])  # the refusal restarted the decoder: only a key frame goes now
    picture = decode(frames[3])
    assert decode(frames[4]).shape == picture.shape
    with pytest.raises(PixelCodingError, match="must be 640x480"):
        decoder.decode(5, frames[5].pixels.data, frames[5].pixels.data_crc32, False, 4, (640, 480))
    # A key frame whose parameter sets declare a larger picture than the stream did is not decoded at all.
    with pytest.raises(PixelCodingError, match="does not decode"):
        PixelDecoder().decode(0, frames[0].pixels.data, frames[0].pixels.data_crc32, True, None, (100, 100))


def test_pixels_at_the_input_size_lose_little_against_the_original_frames(model, video) -> None:
    """The decoded picture, preprocessed, is close to the original frame's network input (a check that the edge
    resizes as the model does and that boxes map back to the source)."""
    from splitinfer.services.pixels import PixelDecoder
    from splitinfer.services.whole_model import network_input

    frame = _pixel_frames(model, video, 1)[0]
    picture = PixelDecoder().decode(0, frame.pixels.data, frame.pixels.data_crc32, True, None, (320, 320))
    x, info = network_input(model, picture, 768, 432)
    with FrameGrabber(str(video), max_frames=1) as grabber:
        original, original_info = model.preprocess(next(iter(grabber.frames())).image)
    assert np.abs(x - original.numpy()).mean() < 0.03
    assert (info.scale_x, info.scale_y) == pytest.approx((original_info.scale_x, original_info.scale_y))


@pytest.mark.slow
def test_the_demo_runs_the_pixels_partition_and_reports_its_bytes(capsys) -> None:
    from splitinfer.cli import main
    from tests.conftest import shared_path

    assert main(["demo", "--frames", "6", "--partition", "pixels", "--pixel-crf", "30",
                 "--weights", str(shared_path("models", "yolo-fastest-1.1"))]) == 0
    out = capsys.readouterr().out
    assert "partition pixels (cut input)" in out and "6 (0 with errors)" in out
    assert "payload (pixels or detections)" in out and "bits/element" not in out


@pytest.mark.slow
def test_results_of_a_rate_controlled_features_stream_record_each_frames_ladder_point(model, engine, video) -> None:
    tap, results, _ = stream_once(engine, model, video, "features", frames=6, rate_kbps=64.0)
    assert all(m.HasField("ladder_point") for m in tap.sent)
    assert [r.origin.ladder_point for r in results] == [m.ladder_point for m in tap.sent]
    assert all(r.origin.HasField("ladder_point") and r.origin.cut == "60" for r in results)


# -- splitinfer eval --partition pixels ------------------------------------------------------------------------


@pytest.mark.slow
def test_eval_reports_the_fidelity_and_exact_bytes_of_the_pixels_partition(model, video, weights_dir, capsys) -> None:
    from splitinfer.cli import main
    from splitinfer.services.edge.partitions import PixelPipeline
    from splitinfer.services.pixels import PixelSettings

    frames = 8
    assert main(["eval", str(video), "--weights", str(weights_dir), "--partition", "pixels", "--rate-kbps", "64",
                 "--intra-period", "4", "--limit", str(frames), "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == frames and report["cut"] == "input" and report["elements_per_frame"] == 0
    assert report["codec"].startswith("pixels: h264 veryfast 64 kbit/s, key frame every 4")
    # The bytes are those of the packets the edge's pipeline makes of the same frames (x264 is deterministic here).
    pipeline = PixelPipeline(model, PixelSettings(crf=None, target_kbps=64.0, key_interval=4), fps=10.0)
    with FrameGrabber(str(video), max_frames=frames) as grabber:
        sent = [len(pipeline.encode(pipeline.run_head(frame)).pixels.data) for frame in grabber.frames()]
    assert report["bytes_per_frame"] == pytest.approx(sum(sent) / frames)
    assert report["detections_ref"] > 0 and 0.0 <= report["fidelity_ap50"] <= 1.0
    assert report["detections_lost"] + report["detections_added"] < 2 * report["detections_ref"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--pixel-crf", "20"], "--pixel-crf set(s) the pixel encoder, which --partition features does not use"),
    (["--rate-kbps", "64", "--codec", "default"], "--codec fix(es) a profile, but --rate-kbps chooses"),
    (["--partition", "pixels", "--cut", "80"], "--cut set(s) the feature codec"),
    (["--partition", "pixels", "--pixel-crf", "20", "--rate-kbps", "64"], "--pixel-crf and --rate-kbps both set"),
    (["--partition", "detections", "--rate-kbps", "64"], "drop --rate-kbps"),
    (["--partition", "detections", "--rate-kbps", "64", "--intra-period", "5"], "drop --rate-kbps and --intra-period"),
    (["--partition", "pixels", "--ladder", "x.json"], "--ladder set(s) the feature codec, which --partition pixels"),
    (["--partition", "auto", "--rate-kbps", "64", "--pixel-crf", "20"], "drop --pixel-crf"),
    (["--partition", "auto"], "add --rate-kbps"),
    (["--partitions", "pixels"], "add --partition auto"),
])
def test_eval_refuses_flags_of_another_partition_before_loading_the_model(video, weights_dir, argv, message,
                                                                           capsys) -> None:
    from splitinfer.cli import main

    assert main(["eval", str(video), "--weights", str(weights_dir), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_pixels_at_the_sources_own_size_stream_and_map_boxes_to_the_source(model, engine, video) -> None:
    frames = 4
    tap, results, _ = stream_once(engine, model, video, "pixels", frames=frames, pixel_size="native", pixel_crf=23)
    assert [r.frame_id for r in results] == list(range(frames)) and all(not r.HasField("error") for r in results)
    coding = results[0].origin.pixel_coding
    assert (coding.width, coding.height, coding.crf) == (0, 0, 23)  # 0x0: each frame at its source size
    assert matched_fraction(results, unsplit_detections(model, video, frames)) >= 0.7
    assert all(r.payload_bytes == len(m.pixels.data) for r, m in zip(results, tap.sent))


def test_pixels_frames_batch_with_other_streams_and_give_what_they_give_alone(model, engine, video) -> None:
    """A batch through the tail executor (as with --max-batch or a GPU): two pixels streams and a features stream
    in one batch each get the result they get alone."""
    from splitinfer.services.cloud.streams import StreamState
    from tests.services.conftest import CUT, encoded_frames

    pixels = _pixel_frames(model, video, 1)[0]
    features = encoded_frames(model, video, 1)[0]
    coding = inference_pb2.PixelCoding(codec="h264", width=320, height=320)
    input_split = engine.open_partition(MODEL, inference_pb2.PARTITION_PIXELS)

    def pixel_state(name: str) -> StreamState:
        return StreamState(name, MODEL, "input", partition=inference_pb2.PARTITION_PIXELS, pixel_coding=coding)

    alone = engine.process(pixel_state("alone"), input_split, pixels, -1)
    prepared = [engine.prepare(pixel_state("a"), input_split, pixels, -1),
                engine.prepare(pixel_state("b"), input_split, pixels, -1),
                engine.prepare(StreamState("c", MODEL, CUT), engine.open_stream(MODEL, CUT), features, -1)]
    batched = engine.finish(prepared)
    assert all(not r.HasField("error") for r in [alone, *batched])
    for result in batched[:2]:
        assert [(d.class_id, d.label) for d in result.detections] == [(d.class_id, d.label) for d in alone.detections]
        for got, expected in zip(result.detections, alone.detections):
            assert (got.x1, got.y1, got.x2, got.y2, got.score) == pytest.approx(
                (expected.x1, expected.y1, expected.x2, expected.y2, expected.score), abs=1e-3)
    assert batched[2].origin.cut == CUT and batched[2].detections


@pytest.mark.parametrize("partition", ["pixels", "detections"])
def test_an_edge_stops_with_a_clear_message_when_the_cloud_is_older_than_partitions(model, engine, video,
                                                                                     partition) -> None:
    """A cloud older than partitions ignores StreamStart.partition and accepts the stream as features (its
    StreamAccepted has no partition): the edge stops at once, saying so, instead of sending frames it would refuse.
    The older cloud is today's cloud with the one field it would not set cleared."""
    from splitinfer.errors import StreamRejectedError
    from splitinfer.services.cloud.server import CloudConfig, CloudServer

    async def scenario():
        server = CloudServer(CloudConfig(model=MODEL, host="127.0.0.1", port=0, metrics_port=-1, plaintext=True),
                             engine=engine)
        current = server.servicer.Infer

        async def older_infer(request_iterator, context):
            async for response in current(request_iterator, context):
                if response.WhichOneof("kind") == "accepted":
                    response.accepted.ClearField("partition")
                yield response

        server.servicer.Infer = older_infer  # type: ignore[method-assign]
        await server.start()
        try:
            settings = edge_settings(video, f"127.0.0.1:{server.port}", PLAINTEXT, partition, frames=3)
            with pytest.raises(StreamRejectedError, match=f"does not serve the {partition} partition") as refused:
                await run_edge(settings, [], pipeline=build_pipeline(settings, model))
            return refused.value
        finally:
            await server.stop(grace=0)

    assert "--partition features" in str(run(scenario()))


@pytest.mark.slow
def test_a_detections_edge_reaches_the_results_bus_only_through_the_check(model, engine, video,
                                                                          nats_server) -> None:
    """With a results bus, what subscribers read comes from JetStream: the good frames' checked detections and, for
    each malformed frame, its error; the CloudEvents copy says which partition produced the result."""
    import nats

    from splitinfer.services.cloud.bus import STREAM_NAME, subject_token

    frames = 8

    async def scenario():
        async with running_cloud(engine, nats=nats_server.url, nats_json=True) as server:
            address = f"127.0.0.1:{server.port}"
            settings = edge_settings(video, address, PLAINTEXT, "detections", frames=frames, stream_id="bus-cam")
            outcomes = []
            async with ResultSubscriber(address, ["bus-cam"], security=PLAINTEXT) as subscriber:
                await subscriber.wait_subscribed()
                await run_edge(settings, [outcomes.append], pipeline=Tap(build_pipeline(settings, model), tamper))
                published = [(await asyncio.wait_for(anext(aiter(subscriber)), 30)).result for _ in range(frames)]
            connection = await nats.connect(nats_server.url)
            event = await connection.jetstream().get_last_msg(STREAM_NAME,
                                                              "splitinfer.events." + subject_token("bus-cam"))
            await connection.close()
            return [o.result for o in outcomes], published, json.loads(event.data)

    results, published, event = run(scenario(), timeout=300)
    assert published == results
    for result in published:
        if result.frame_id in HOSTILE:
            assert result.error.reason == inference_pb2.FRAME_ERROR_REASON_BAD_DETECTIONS and not result.detections
        else:
            assert not result.HasField("error") and result.detections
            checked_detections(without_track_ids(result.detections), width=768, height=432,
                               class_names=model.class_names)
    assert event["data"]["origin"] == {"partition": "PARTITION_DETECTIONS", "cut": "output"}
