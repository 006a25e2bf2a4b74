"""The edge's streamer: temporal coding end to end, refusals and an unreachable cloud are reported."""

from __future__ import annotations

import pytest

from splitinfer.services.edge.app import EdgeSettings, build_pipeline, run_edge
from splitinfer.errors import CloudUnavailableError, ServiceError, StreamRejectedError
from tests.services.conftest import MODEL, PLAINTEXT, encoded_frames, free_port, run, running_cloud


def test_temporal_coding_references_the_previous_frame_and_restarts_every_intra_period(model, video) -> None:
    frames = encoded_frames(model, video, 7, coder="TEMPORAL_CONTEXTS", intra_period=3)
    assert [f.reference_frame_id if f.HasField("reference_frame_id") else None for f in frames] == [
        None, 0, 1, None, 3, 4, None]
    assert [f.tensors[0].coder for f in frames].count(4) == 4  # ENTROPY_CODER_TEMPORAL_CONTEXTS


def test_temporal_stream_is_answered_without_errors(engine, model, video) -> None:
    async def scenario():
        outcomes = []
        async with running_cloud(engine) as server:
            settings = EdgeSettings(security=PLAINTEXT, source=str(video), cloud=f"127.0.0.1:{server.port}", stream_id="temporal",
                                    model=MODEL, frames=8, window=3, coder="TEMPORAL_CONTEXTS", intra_period=4)
            await run_edge(settings, [outcomes.append], pipeline=build_pipeline(settings, model))
        return outcomes

    outcomes = run(scenario())
    assert [o.result.frame_id for o in outcomes] == list(range(8))
    assert all(not o.result.HasField("error") for o in outcomes), [o.result.error for o in outcomes]


def test_a_cloud_that_serves_another_model_refuses_the_stream(engine, weights_dir, video) -> None:
    async def scenario():
        async with running_cloud(engine) as server:
            settings = EdgeSettings(security=PLAINTEXT, source=str(video), cloud=f"127.0.0.1:{server.port}", stream_id="other-model",
                                    model="yolo-fastest-1.1", weights=str(weights_dir), frames=2)
            await run_edge(settings, [])

    with pytest.raises(StreamRejectedError, match="yolo-fastest-1.1"):
        run(scenario())


def test_an_unreachable_cloud_is_reported_after_the_retry_budget(model, video) -> None:
    settings = EdgeSettings(security=PLAINTEXT, source=str(video), cloud=f"127.0.0.1:{free_port()}", stream_id="lonely", model=MODEL,
                            frames=2, give_up_after_s=1.0)
    with pytest.raises(CloudUnavailableError, match="could not reach the cloud"):
        run(run_edge(settings, [], pipeline=build_pipeline(settings, model)))


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(clip_min=0.0), "both --clip-min and --clip-max"),
    (dict(levels=1), "levels"),
    (dict(coder="ZIP"), "unknown coder"),
    (dict(profile="/nonexistent/profile.json"), "does not exist"),
    (dict(window=0), "window"),
])
def test_bad_edge_settings_are_refused_with_a_hint(model, video, overrides, message) -> None:
    settings = EdgeSettings(**{**dict(security=PLAINTEXT, source=str(video), stream_id="s", model=MODEL, cloud="127.0.0.1:1"), **overrides})
    with pytest.raises(ServiceError, match=message):
        run(run_edge(settings, [], pipeline=build_pipeline(settings, model)))


def test_demo_streams_the_sample_video_and_prints_a_summary(capsys) -> None:
    from splitinfer.cli import main
    from tests.conftest import shared_path

    shared_path("video")
    assert main(["demo", "--frames", "6", "--weights", str(shared_path("models", "yolo-fastest-1.1"))]) == 0
    out = capsys.readouterr().out
    assert "frames answered" in out and "6 (0 with errors)" in out
    assert "bits/element" in out and "latency preprocess->result" in out


def test_a_profile_for_another_cut_or_model_is_refused_and_its_own_cut_is_the_default(model, video, tmp_path) -> None:
    from splitinfer.codec import CodecProfile, Quantizer

    def profile(name: str, **fields) -> str:
        path = tmp_path / name
        CodecProfile(Quantizer.uniform(-16.0, 16.0, 12), **fields).save(path)
        return str(path)

    base = dict(security=PLAINTEXT, source=str(video), stream_id="s", model=MODEL, cloud="127.0.0.1:1")
    pipeline = build_pipeline(EdgeSettings(**base, profile=profile("p80.json", model=MODEL, cut="80")), model)
    assert pipeline.cut == "80" and pipeline.quantizer("layer80").levels == 12
    with pytest.raises(ServiceError, match="made for cut 80"):
        build_pipeline(EdgeSettings(**base, cut="34", profile=profile("p80b.json", model=MODEL, cut="80")), model)
    with pytest.raises(ServiceError, match="made for model"):
        build_pipeline(EdgeSettings(**base, profile=profile("other.json", model="yolo-fastest-1.1", cut="80")), model)


def test_a_profile_with_hysteresis_holds_reference_levels_in_inter_frames(model, video, tmp_path) -> None:
    import numpy as np

    from splitinfer.codec import CodecProfile, Coder, Quantizer, decode_levels
    from splitinfer.services.edge.capture import FrameGrabber
    from splitinfer.wire import tensor_from_proto
    from tests.services.conftest import CUT, edge_pipeline

    quantizer = Quantizer.uniform(-12.0, 12.0, 9)
    pipelines = {}
    for margin in (0.0, 0.3):
        path = tmp_path / f"h{margin}.json"
        CodecProfile(quantizer, coder=Coder.TEMPORAL_CONTEXTS, model=MODEL, cut=CUT, intra_period=100,
                     hysteresis=margin).save(path)
        pipelines[margin] = edge_pipeline(model, CUT, profile=str(path))
    assert pipelines[0.3].profile.hysteresis == 0.3
    sizes = {0.0: 0, 0.3: 0}
    previous = None
    with FrameGrabber(str(video), max_frames=5) as grabber:
        for frame in grabber.frames():
            head = pipelines[0.0].run_head(frame)
            for margin, pipeline in pipelines.items():
                message = pipeline.encode(head)
                (coded,) = message.tensors
                sizes[margin] += len(coded.payload) if message.HasField("reference_frame_id") else 0
                if margin == 0.3:
                    levels = decode_levels(tensor_from_proto(coded), reference=previous)
                    plain = quantizer.quantize(head.tensors["layer80"])
                    assert np.all((levels == plain) | (levels == previous)) if previous is not None else \
                        np.array_equal(levels, plain)
                    previous = levels
    assert sizes[0.3] < sizes[0.0]


def test_warm_up_leaves_first_frame_clip_ranges_and_coding_to_the_first_real_frame(model) -> None:
    from tests.services.conftest import edge_pipeline

    pipeline = edge_pipeline(model, "60", levels=8)  # layer60 has no shipped clip range
    pipeline.warm_up()
    assert pipeline.quantizer("layer60") is None


def test_an_edge_refused_for_max_streams_retries_and_streams_once_a_slot_frees(engine, model, video) -> None:
    async def scenario():
        import asyncio

        async with running_cloud(engine, max_streams=1) as server:
            def settings(stream_id, frames):
                return EdgeSettings(security=PLAINTEXT, source=str(video), cloud=f"127.0.0.1:{server.port}", stream_id=stream_id,
                                    model=MODEL, frames=frames, window=1, give_up_after_s=60.0)

            first, second = [], []
            first_stats = asyncio.create_task(run_edge(settings("first", 30), [first.append],
                                                       pipeline=build_pipeline(settings("first", 30), model)))
            while not first:  # the first stream holds the only slot
                await asyncio.sleep(0.05)
            second_stats = await run_edge(settings("second", 4), [second.append],
                                          pipeline=build_pipeline(settings("second", 4), model))
            await first_stats
        return first, second, second_stats

    first, second, second_stats = run(scenario())
    assert [o.result.frame_id for o in first] == list(range(30))
    assert [o.result.frame_id for o in second] == [0, 1, 2, 3]
    assert second_stats.reconnects >= 1  # refused with RetryInfo, retried after the hinted delay


def test_a_frame_prepared_as_the_call_breaks_is_not_lost(model, video) -> None:
    """The sender is cancelled (its call broke) just as the executor finishes the next frame's head and encode: that
    frame is the next call's first, not dropped. (A kill -9 of the cloud once left a file-mode pixels stream one
    result short this way: the finished job was cleared while its frame was never sent.)"""
    import asyncio

    from splitinfer.services.edge.capture import FrameGrabber
    from splitinfer.services.edge.client import EdgeStreamer, StreamerConfig
    from splitinfer.services.edge.partitions import PixelPipeline
    from splitinfer.services.pixels import PixelSettings

    async def scenario() -> list[int]:
        with FrameGrabber(str(video), max_frames=3) as grabber:
            streamer = EdgeStreamer(StreamerConfig(cloud="127.0.0.1:1", stream_id="cam"),
                                    PixelPipeline(model, PixelSettings(), fps=10.0), grabber, lambda outcome: None)
            got = []
            for _ in range(2):
                task = asyncio.create_task(streamer._next_frame())
                while streamer._job is None or not streamer._job.done():
                    await asyncio.sleep(0)
                task.cancel()  # the frame is ready, but the sender has not taken it yet
                try:
                    prepared = await task
                except asyncio.CancelledError:
                    prepared = await streamer._next_frame()  # the next call's sender
                got.append(prepared[0].frame_id)
            return got

    assert run(scenario()) == [0, 1]
