"""Bad input on the wire gets the documented status, and the server keeps serving the other streams.

Frame-level problems come back in-band (one result per frame, FrameError.code) and the stream goes on;
stream-level problems end the call with a status (see splitinfer.services.cloud.servicer).
"""

from __future__ import annotations

import asyncio
import zlib

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitinfer.channel_options import channel_options
from splitinfer.v1 import inference_pb2, inference_pb2_grpc
from tests.services.conftest import CUT, MODEL, encoded_frames, run, running_cloud

INVALID_ARGUMENT, FAILED_PRECONDITION = 3, 9


@pytest.fixture(scope="module")
def frames(model, video) -> list:
    return encoded_frames(model, video, 3)


def start(stream_id: str = "cam-1", model: str = MODEL, cut: str = CUT) -> inference_pb2.InferRequest:
    return inference_pb2.InferRequest(start=inference_pb2.StreamStart(stream_id=stream_id, model=model, cut=cut))


def frame_request(frame, frame_id: int) -> inference_pb2.InferRequest:
    message = inference_pb2.FeatureFrame()
    message.CopyFrom(frame)
    message.frame_id = frame_id
    return inference_pb2.InferRequest(frame=message)


class Stream:
    """A raw Infer call: write requests, read responses, each read bounded by a timeout."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call = inference_pb2_grpc.InferenceServiceStub(channel).Infer()

    async def send(self, request: inference_pb2.InferRequest) -> None:
        await self.call.write(request)

    async def receive(self) -> inference_pb2.InferResponse:
        return await asyncio.wait_for(self.call.read(), 30)

    async def open(self, **kwargs) -> inference_pb2.StreamAccepted:
        await self.send(start(**kwargs))
        response = await self.receive()
        assert response.WhichOneof("kind") == "accepted"
        return response.accepted

    async def status(self) -> tuple[grpc.StatusCode, str]:
        """Read until the call ends; its status code and details."""
        return await self.status_collecting([])

    async def status_collecting(self, frame_ids: list[int]) -> tuple[grpc.StatusCode, str]:
        """Read until the call ends, appending the frame id of each result; its status code and details."""
        try:
            while (response := await self.receive()) is not grpc.aio.EOF:
                if response.WhichOneof("kind") == "result":
                    frame_ids.append(response.result.frame_id)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details()
        return await self.call.code(), await self.call.details()


async def with_stream(engine, scenario, **cloud_config):
    async with running_cloud(engine, **cloud_config) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
            return await scenario(channel, server)


def test_unknown_model_is_refused_before_any_frame_with_a_rich_status(engine) -> None:
    async def scenario(channel, server):
        stream = Stream(channel)
        await stream.send(start(model="resnet-9000"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.receive()
        return caught.value

    error = run(with_stream(engine, scenario))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "resnet-9000" in error.details() and MODEL in error.details()
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("UNKNOWN_MODEL_OR_CUT", "splitinfer.v1")


def test_unknown_cut_is_refused_before_any_frame(engine) -> None:
    async def scenario(channel, server):
        stream = Stream(channel)
        await stream.send(start(cut="layer9999"))
        return await stream.status()

    code, details = run(with_stream(engine, scenario))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "cut" in details


def test_a_frame_before_the_start_message_is_refused(engine, frames) -> None:
    async def scenario(channel, server):
        stream = Stream(channel)
        await stream.send(frame_request(frames[0], 0))
        return await stream.status()

    code, details = run(with_stream(engine, scenario))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "StreamStart" in details


@pytest.mark.parametrize("stream_id", ["", " spaces ", "x" * 200, "-starts-with-dash"])
def test_a_malformed_stream_id_is_refused(engine, stream_id) -> None:
    async def scenario(channel, server):
        stream = Stream(channel)
        await stream.send(start(stream_id=stream_id))
        return await stream.status()

    code, _ = run(with_stream(engine, scenario))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_second_start_message_ends_the_call(engine, frames) -> None:
    async def scenario(channel, server):
        stream = Stream(channel)
        await stream.open()
        await stream.send(frame_request(frames[0], 0))
        first = await stream.receive()
        await stream.send(start())
        return first, await stream.status()

    first, (code, details) = run(with_stream(engine, scenario))
    assert first.result.frame_id == 0 and not first.result.HasField("error")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "StreamStart" in details


def _corrupt_crc(frame):
    frame.tensors[0].payload_crc32 ^= 0xFFFF


def _garbage_payload(frame):
    payload = bytes(range(256)) * 8
    frame.tensors[0].payload = payload
    frame.tensors[0].payload_crc32 = zlib.crc32(payload)


def _forged_shape(frame):
    frame.tensors[0].shape[:] = [1, 48, 20, 21]


def _huge_shape(frame):
    frame.tensors[0].shape[:] = [1, 64000, 8000, 8000]


def _missing_tensor(frame):
    del frame.tensors[:]


def _renamed_tensor(frame):
    frame.tensors[0].name = "layer79"


def _bad_levels(frame):
    frame.tensors[0].quantizer.levels = 300


def _unknown_coder(frame):
    frame.tensors[0].coder = 77


def _zero_image_size(frame):
    frame.capture.image_width = 0


def _impossible_capture_time(frame):
    # Found by the servicer fuzzer: year ~420,000 made protobuf's ToNanoseconds raise and ended the stream.
    frame.capture.capture_time.seconds = 13_194_139_529_472


def _missing_reference(frame):
    frame.reference_frame_id = 12345


# name: (damage, FrameError.code, a word of the message, FrameError.reason)
BAD_FRAMES = {
    "corrupt CRC": (_corrupt_crc, INVALID_ARGUMENT, "CRC", "FRAME_ERROR_REASON_UNDECODABLE_TENSOR"),
    "garbage payload": (_garbage_payload, INVALID_ARGUMENT, "payload", "FRAME_ERROR_REASON_UNDECODABLE_TENSOR"),
    "forged shape": (_forged_shape, INVALID_ARGUMENT, "shape", "FRAME_ERROR_REASON_WRONG_SHAPE"),
    "huge shape": (_huge_shape, INVALID_ARGUMENT, "shape", "FRAME_ERROR_REASON_WRONG_SHAPE"),
    "missing tensor": (_missing_tensor, INVALID_ARGUMENT, f"layer{CUT}", "FRAME_ERROR_REASON_WRONG_TENSORS"),
    "renamed tensor": (_renamed_tensor, INVALID_ARGUMENT, f"layer{CUT}", "FRAME_ERROR_REASON_WRONG_TENSORS"),
    "bad level count": (_bad_levels, INVALID_ARGUMENT, "levels", "FRAME_ERROR_REASON_UNDECODABLE_TENSOR"),
    "unknown coder": (_unknown_coder, INVALID_ARGUMENT, "coder", "FRAME_ERROR_REASON_UNDECODABLE_TENSOR"),
    "zero image size": (_zero_image_size, INVALID_ARGUMENT, "image_width", "FRAME_ERROR_REASON_BAD_IMAGE_SIZE"),
    "impossible capture time": (_impossible_capture_time, INVALID_ARGUMENT, "capture_time",
                                "FRAME_ERROR_REASON_BAD_CAPTURE_TIME"),
    "missing reference": (_missing_reference, FAILED_PRECONDITION, "intra", "FRAME_ERROR_REASON_MISSING_REFERENCE"),
}


def test_each_bad_frame_gets_an_in_band_error_and_the_stream_goes_on(engine, frames) -> None:
    async def scenario(channel, server):
        stream = Stream(channel)
        await stream.open()
        answers = []
        frame_id = 0
        for mutate, _, _, _ in BAD_FRAMES.values():
            bad = inference_pb2.FeatureFrame()
            bad.CopyFrom(frames[0])
            mutate(bad)
            await stream.send(frame_request(bad, frame_id))
            answers.append((await stream.receive()).result)
            await stream.send(frame_request(frames[1], frame_id + 1))
            answers.append((await stream.receive()).result)
            frame_id += 2
        await stream.call.done_writing()
        return answers, await stream.status()

    answers, (code, _) = run(with_stream(engine, scenario))
    assert code == grpc.StatusCode.OK
    assert [a.frame_id for a in answers] == list(range(2 * len(BAD_FRAMES)))
    for (name, (_, expected_code, hint, reason)), bad, good in zip(BAD_FRAMES.items(), answers[::2], answers[1::2]):
        assert bad.HasField("error"), name
        assert bad.error.code == expected_code, (name, bad.error)
        assert inference_pb2.FrameErrorReason.Name(bad.error.reason) == reason, (name, bad.error)
        assert hint.lower() in bad.error.message.lower(), (name, bad.error.message)
        assert bad.error.intra_frame_requested == (name == "missing reference")
        assert not good.HasField("error"), (name, good.error)


@pytest.mark.parametrize("position", ["first", "after the start"])
def test_an_empty_request_is_invalid_argument_wherever_it_comes(engine, frames, position) -> None:
    async def scenario(channel, server):
        stream = Stream(channel)
        if position != "first":
            await stream.open()
        await stream.send(inference_pb2.InferRequest())
        try:
            await stream.receive()
        except grpc.aio.AioRpcError as exc:
            return exc
        raise AssertionError("an empty request was accepted")

    error = run(with_stream(engine, scenario))
    info = error_details_pb2.ErrorInfo()
    assert rpc_status.from_call(error).details[0].Unpack(info)
    assert (error.code(), info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_REQUEST")
    assert "holds neither" in error.details()


def test_frame_ids_must_increase_within_a_call(engine, frames) -> None:
    async def scenario(channel, server):
        stream = Stream(channel)
        await stream.open()
        results = []
        for frame_id in (5, 5, 3, 6):
            await stream.send(frame_request(frames[0], frame_id))
            results.append((await stream.receive()).result)
        return results

    results = run(with_stream(engine, scenario))
    assert [r.HasField("error") for r in results] == [False, True, True, False]
    assert results[1].error.code == INVALID_ARGUMENT and "increase" in results[1].error.message
    assert results[1].error.reason == inference_pb2.FRAME_ERROR_REASON_FRAME_ID_NOT_INCREASING


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.integers(0, 2**20), st.binary(min_size=1, max_size=8), st.booleans()),
                          min_size=1, max_size=6))
def test_random_payload_damage_never_breaks_the_stream(engine, frames, mutations) -> None:
    """Flipped payload bytes (with or without a matching CRC): one answer per frame, stream stays usable."""

    async def scenario(channel, server):
        stream = Stream(channel)
        await stream.open()
        answers = []
        for frame_id, (offset, patch, fix_crc) in enumerate(mutations):
            bad = inference_pb2.FeatureFrame()
            bad.CopyFrom(frames[0])
            tensor = bad.tensors[0]
            payload = bytearray(tensor.payload)
            position = offset % len(payload)
            payload[position:position + len(patch)] = patch
            tensor.payload = bytes(payload)
            if fix_crc:
                tensor.payload_crc32 = zlib.crc32(tensor.payload)
            await stream.send(frame_request(bad, frame_id))
            answers.append((await stream.receive()).result)
        await stream.send(frame_request(frames[1], len(mutations)))
        answers.append((await stream.receive()).result)
        return answers

    answers = run(with_stream(engine, scenario))
    assert [a.frame_id for a in answers] == list(range(len(mutations) + 1))
    for answer in answers[:-1]:
        assert not answer.HasField("error") or answer.error.code == INVALID_ARGUMENT
    assert not answers[-1].HasField("error")


def test_an_oversized_message_ends_only_its_own_stream(engine, frames) -> None:
    async def scenario(channel, server):
        healthy, oversized = Stream(channel), Stream(channel)
        await healthy.open(stream_id="healthy")
        await oversized.open(stream_id="oversized")
        big = inference_pb2.FeatureFrame()
        big.CopyFrom(frames[0])
        big.tensors[0].payload = b"\0" * (2 * 1024 * 1024)
        await oversized.send(frame_request(big, 0))
        status = await oversized.status()
        await healthy.send(frame_request(frames[0], 0))
        answer = await healthy.receive()
        return status, answer

    (code, _), answer = run(with_stream(engine, scenario, max_message_bytes=1024 * 1024))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert answer.result.frame_id == 0 and not answer.result.HasField("error")


def test_streams_beyond_max_streams_are_refused(engine) -> None:
    async def scenario(channel, server):
        first, second = Stream(channel), Stream(channel)
        await first.open(stream_id="one")
        await second.send(start(stream_id="two"))
        return await second.status()

    code, details = run(with_stream(engine, scenario, max_streams=1))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-streams" in details


def test_a_refused_stream_says_when_to_retry(engine) -> None:
    async def scenario(channel, server):
        first, second = Stream(channel), Stream(channel)
        await first.open(stream_id="one")
        await second.send(start(stream_id="two"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await second.receive()
        return rpc_status.from_call(caught.value)

    status = run(with_stream(engine, scenario, max_streams=1))
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    assert retry.retry_delay.ToNanoseconds() > 0


def test_subscribe_with_a_malformed_stream_id_is_refused(engine) -> None:
    async def scenario(channel, server):
        call = inference_pb2_grpc.InferenceServiceStub(channel).Subscribe(
            inference_pb2.SubscribeRequest(stream_ids=["bad id with spaces"]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(call.read(), 30)
        return caught.value.code()

    assert run(with_stream(engine, scenario)) == grpc.StatusCode.INVALID_ARGUMENT


def test_the_clouds_element_limit_applies_to_every_frame_it_decodes(model, frames) -> None:
    """A cloud started with a smaller --max-elements refuses a tensor above it in-band, before decoding it."""
    from splitinfer.codec import CodecLimits
    from splitinfer.services.cloud.engine import TailEngine
    from splitinfer.services.cloud.streams import StreamState

    engine = TailEngine(model, limits=CodecLimits(max_elements=1000))
    split = engine.open_stream(MODEL, CUT)
    result = engine.process(StreamState("cam-limits", MODEL, split.cut), split, frames[0], -1)
    assert result.error.reason == inference_pb2.FRAME_ERROR_REASON_UNDECODABLE_TENSOR
    assert "1000" in result.error.message, result.error.message
