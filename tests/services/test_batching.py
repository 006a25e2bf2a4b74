"""Dynamic batching in the cloud: batched results equal batch-1 results, per stream, frame errors and references included.

Real model, real temporally coded video frames (the shipped video profile), real gRPC on loopback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.rpc.code_pb2 import FAILED_PRECONDITION, INVALID_ARGUMENT

from splitinfer.channel_options import channel_options
from splitinfer.services.cloud.batcher import FrameBatcher, process_together
from splitinfer.services.cloud.server import CloudConfig
from splitinfer.services.cloud.streams import StreamState
from splitinfer.errors import ServiceError
from splitinfer.v1 import inference_pb2
from tests.services.conftest import MODEL, run, running_cloud
from tests.services.test_bad_input import Stream

VIDEO_CUT = "60"
FRAMES = 5


@pytest.fixture(scope="module")
def coded(model, video) -> list[inference_pb2.FeatureFrame]:
    """Frames 0..4 of the video through the real edge pipeline with the temporal video profile (1 intra, 4 inter)."""
    from splitinfer import dnn
    from splitinfer.services.edge.capture import FrameGrabber
    from tests.services.conftest import edge_pipeline

    profile = Path(dnn.__file__).resolve().parent / "profiles" / f"{MODEL}-video.json"
    pipeline = edge_pipeline(model, VIDEO_CUT, profile=str(profile))
    with FrameGrabber(str(video), max_frames=FRAMES) as grabber:
        frames = [pipeline.encode(pipeline.run_head(frame)) for frame in grabber.frames()]
    assert [f.HasField("reference_frame_id") for f in frames] == [False] + [True] * (FRAMES - 1)
    return frames


def _streams(coded) -> dict[str, list[inference_pb2.FeatureFrame]]:
    """Three streams: a clean one, one with a corrupt payload in frame 2, one that skips frame 1 (a reference miss)."""
    corrupt = [_copy(f) for f in coded]
    corrupt[2].tensors[0].payload = corrupt[2].tensors[0].payload[: len(corrupt[2].tensors[0].payload) // 3]
    return {"clean": list(coded), "corrupt": corrupt, "skips": [coded[0], *coded[2:]]}


def _copy(frame: inference_pb2.FeatureFrame) -> inference_pb2.FeatureFrame:
    copy = inference_pb2.FeatureFrame()
    copy.CopyFrom(frame)
    return copy


def _comparable(result: inference_pb2.InferenceResult) -> tuple:
    """What must not change with batching: frame, error, and detections (to float32 rounding of the tail)."""
    boxes = tuple((d.class_id, round(d.x1, 2), round(d.y1, 2), round(d.x2, 2), round(d.y2, 2), round(d.score, 4))
                  for d in result.detections)
    return result.stream_id, result.frame_id, result.error.code, result.error.intra_frame_requested, boxes


def test_frames_processed_together_equal_one_frame_at_a_time(engine, coded) -> None:
    split = engine.open_stream(MODEL, VIDEO_CUT)
    streams = _streams(coded)
    alone = {}
    for name, frames in streams.items():
        state, previous = StreamState(name, MODEL, split.cut), -1
        alone[name] = []
        for frame in frames:
            alone[name].append(engine.process(state, split, frame, previous))
            previous = frame.frame_id
    states = {name: StreamState(name, MODEL, split.cut) for name in streams}
    batched = {name: [] for name in streams}
    previous = dict.fromkeys(streams, -1)
    for step in range(max(len(f) for f in streams.values())):
        work = [(states[n], split, f[step], previous[n]) for n, f in streams.items() if step < len(f)]
        for (state, _, frame, _), result in zip(work, process_together(engine, work)):
            batched[state.stream_id].append(result)
            previous[state.stream_id] = frame.frame_id
    for name in streams:
        assert [_comparable(r) for r in batched[name]] == [_comparable(r) for r in alone[name]]
    codes = {name: [r.error.code for r in results] for name, results in batched.items()}
    assert codes["clean"] == [0] * FRAMES
    assert codes["corrupt"] == [0, 0, INVALID_ARGUMENT, FAILED_PRECONDITION, FAILED_PRECONDITION]
    assert codes["skips"] == [0, FAILED_PRECONDITION, FAILED_PRECONDITION, FAILED_PRECONDITION]
    assert all(len(r.detections) > 0 for r in batched["clean"])


def test_a_stream_twice_in_one_batch_decodes_against_its_own_previous_frame(engine, coded) -> None:
    split = engine.open_stream(MODEL, VIDEO_CUT)
    state = StreamState("twice", MODEL, split.cut)
    results = process_together(engine, [(state, split, coded[0], -1), (state, split, coded[1], 0)])
    assert [r.error.code for r in results] == [0, 0]
    assert state.decoder.reference_id == coded[1].frame_id


async def _replay(port: int, streams: dict[str, list[inference_pb2.FeatureFrame]]) -> dict[str, list]:
    """Each stream on its own channel, all at once, one frame in flight per stream; results by stream."""
    async def one(name: str, frames: list[inference_pb2.FeatureFrame]) -> list:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as channel:
            stream = Stream(channel)
            await stream.open(stream_id=name, model=MODEL, cut=VIDEO_CUT)
            results = []
            for frame in frames:
                await stream.send(inference_pb2.InferRequest(frame=frame))
                results.append((await stream.receive()).result)
            await stream.call.done_writing()
            assert await stream.receive() is grpc.aio.EOF
            return results

    gathered = await asyncio.gather(*(one(name, frames) for name, frames in streams.items()))
    return dict(zip(streams, gathered))


def test_a_batching_cloud_answers_like_a_batch_1_cloud(engine, coded) -> None:
    streams = _streams(coded)

    async def scenario():
        async with running_cloud(engine) as single:
            alone = await _replay(single.port, streams)
        # A long window: the three streams' frames wait for each other, so batches really form.
        async with running_cloud(engine, max_batch=4, max_batch_delay_ms=300.0) as batching:
            together = await _replay(batching.port, streams)
            return alone, together, batching.batcher.batches, batching.batcher.frames

    alone, together, batches, frames = run(scenario())
    for name in streams:
        assert [_comparable(r) for r in together[name]] == [_comparable(r) for r in alone[name]]
        # Each stream is tracked in its own frame order, batched or not (docs/TRACKS.md).
        assert [[d.track_id for d in r.detections] for r in together[name]] == \
            [[d.track_id for d in r.detections] for r in alone[name]]
    # Frames that fail their checks or decoding are answered at once; the others reach the tail, some together.
    assert frames == sum(not r.HasField("error") for results in together.values() for r in results)
    assert batches < frames


def test_batch_settings_are_checked() -> None:
    with pytest.raises(ServiceError, match="max-batch"):
        CloudConfig(max_batch=0)
    with pytest.raises(ServiceError, match="max-batch-delay-ms"):
        CloudConfig(max_batch_delay_ms=-1)
    with pytest.raises(ServiceError, match="max-batch"):
        FrameBatcher(None, max_batch=0)  # type: ignore[arg-type]


def _run_steps(engine, coded, batched: bool) -> dict[str, list]:
    split = engine.open_stream(MODEL, VIDEO_CUT)
    streams = _streams(coded)
    states = {name: StreamState(name, MODEL, split.cut) for name in streams}
    previous = dict.fromkeys(streams, -1)
    out = {name: [] for name in streams}
    for step in range(max(len(f) for f in streams.values())):
        work = [(states[n], split, f[step], previous[n]) for n, f in streams.items() if step < len(f)]
        results = process_together(engine, work) if batched else [engine.process(*item) for item in work]
        for (state, _, frame, _), result in zip(work, results):
            out[state.stream_id].append(result)
            previous[state.stream_id] = frame.frame_id
    return out


def test_batches_padded_to_a_power_of_two_answer_like_unpadded(model, coded) -> None:
    """The GPU's padding (3 frames run as 4, the extra row dropped), exercised on the CPU."""
    from splitinfer.services.cloud.engine import TailEngine, bucket_size

    assert [bucket_size(n) for n in (1, 2, 3, 5, 64, 65)] == [1, 2, 4, 8, 64, 128]
    padded = _run_steps(TailEngine(model, pad_batches=True), coded, batched=True)
    alone = _run_steps(TailEngine(model), coded, batched=False)
    for name in alone:
        assert [_comparable(r) for r in padded[name]] == [_comparable(r) for r in alone[name]]


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="torch sees no CUDA GPU on this machine")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_cuda_engine_answers_like_the_cpu_engine(weights_dir, model, coded, precision: str) -> None:
    from splitinfer.dnn import load_model
    from splitinfer.services.cloud.engine import TailEngine

    gpu = TailEngine(load_model(MODEL, weights=str(weights_dir)), device="cuda", precision=precision)
    gpu.warm_up(4)
    on_gpu = _run_steps(gpu, coded, batched=True)
    on_cpu = _run_steps(TailEngine(model), coded, batched=False)
    for name in on_cpu:
        for a, b in zip(on_gpu[name], on_cpu[name]):
            assert (a.frame_id, a.error.code) == (b.frame_id, b.error.code)
            confident = [d for d in b.detections if d.score >= 0.4]
            for d in confident:
                assert any(e.class_id == d.class_id and abs(e.score - d.score) < 0.02
                           and max(abs(e.x1 - d.x1), abs(e.y1 - d.y1), abs(e.x2 - d.x2), abs(e.y2 - d.y2)) < 2.0
                           for e in a.detections), (name, a.frame_id, d)
