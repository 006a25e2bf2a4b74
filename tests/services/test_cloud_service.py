"""The cloud's service surface: health, reflection, metrics, subscriber fan-out, stream ownership, drain."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from splitinfer.channel_options import channel_options
from splitinfer.services.cloud.server import CloudConfig, CloudServer
from splitinfer.services.cloud.subscribers import SubscriberHub
from splitinfer.v1 import inference_pb2
from splitinfer.wire import coded_bytes
from tests.services.conftest import CUT, MODEL, PLAINTEXT, encoded_frames, run, running_cloud
from tests.services.test_bad_input import Stream, frame_request

SERVICE = "splitinfer.v1.InferenceService"


@pytest.fixture(scope="module")
def frames(model, video) -> list:
    return encoded_frames(model, video, 6)


async def health_status(channel, service: str) -> str:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def test_health_is_not_serving_until_the_model_is_loaded(weights_dir) -> None:
    async def scenario():
        server = CloudServer(CloudConfig(model=MODEL, weights=str(weights_dir), host="127.0.0.1", port=0, plaintext=True,
                                         metrics_port=-1))
        starting = asyncio.create_task(server.start())
        while not server.port:
            await asyncio.sleep(0.01)
        seen = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
            while not starting.done():
                status = await health_status(channel, SERVICE)
                # The engine is set before SERVING is: record whether it was loaded when the answer arrived.
                seen.append((status, server.servicer.engine is not None))
                if status == "NOT_SERVING" and len(seen) == 1:
                    stream = Stream(channel)
                    try:
                        await stream.send(inference_pb2.InferRequest(start=inference_pb2.StreamStart(
                            stream_id="early", model=MODEL, cut=CUT)))
                    except grpc.aio.AioRpcError as exc:  # the refusal can end the call before the write completes
                        early = (exc.code(), exc.details())
                    else:
                        early = await stream.status()
                await asyncio.sleep(0.05)
            await starting
            after = [await health_status(channel, name) for name in ("", SERVICE)]
        await server.stop(grace=0)
        return seen, early, after

    seen, early, after = run(scenario())
    assert seen and seen[0] == ("NOT_SERVING", False)
    # SERVING may be seen in the instant between the last health update and start() returning, never earlier.
    assert all(loaded for status, loaded in seen if status == "SERVING")
    assert [status for status, _ in seen] == sorted(status for status, _ in seen)  # NOT_SERVING..., then SERVING
    assert early[0] == grpc.StatusCode.UNAVAILABLE and "loading" in early[1]
    assert after == ["SERVING", "SERVING"]


def test_reflection_lists_the_services(engine) -> None:
    async def scenario():
        async with running_cloud(engine) as server:
            loop = asyncio.get_running_loop()

            def services() -> list[str]:
                with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                    return ProtoReflectionDescriptorDatabase(channel).get_services()

            return await loop.run_in_executor(None, services)

    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= set(run(scenario()))


def test_reflection_v1_answers_like_v1alpha(engine) -> None:
    from grpc_reflection.v1alpha import reflection_pb2

    async def scenario():
        async with running_cloud(engine) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                call = channel.stream_stream(
                    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                    request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                    response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)()
                answers = []
                for request in (reflection_pb2.ServerReflectionRequest(list_services=""),
                                reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
                                reflection_pb2.ServerReflectionRequest(
                                    file_containing_symbol="grpc.reflection.v1.ServerReflection")):
                    await call.write(request)
                    answers.append(await call.read())
                await call.done_writing()
                return answers

    listed, inference, itself = run(scenario())
    assert SERVICE in {s.name for s in listed.list_services_response.service}
    assert inference.file_descriptor_response.file_descriptor_proto
    assert itself.file_descriptor_response.file_descriptor_proto, itself.error_response


def test_metrics_count_frames_bytes_and_streams(engine, frames) -> None:
    async def scenario():
        async with running_cloud(engine, metrics_port=0, metrics_host="127.0.0.1") as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                stream = Stream(channel)
                await stream.open()
                for frame_id in range(3):
                    await stream.send(frame_request(frames[frame_id], frame_id))
                    await stream.receive()
                loop = asyncio.get_running_loop()
                url = f"http://127.0.0.1:{server.metrics_port}/metrics"
                text = await loop.run_in_executor(None, lambda: urllib.request.urlopen(url, timeout=10).read())
                return text.decode(), sum(coded_bytes(f.tensors) for f in frames[:3])  # payloads, quantizers, headers

    text, payload = run(scenario())
    assert f'splitinfer_frames_total{{model="{MODEL}",outcome="OK"}} 3.0' in text
    assert f'splitinfer_payload_bytes_total{{model="{MODEL}"}} {float(payload)}' in text
    assert "splitinfer_open_streams 1.0" in text
    assert 'splitinfer_stage_seconds_count{stage="tail"} 3.0' in text
    assert f'splitinfer_bits_per_element_count{{model="{MODEL}"}} 3.0' in text
    assert "splitinfer_dropped_results_total 0.0" in text


def test_a_slow_subscriber_loses_its_oldest_results_and_they_are_counted() -> None:
    async def scenario():
        dropped = []
        hub = SubscriberHub(capacity=3, on_drop=dropped.append)
        async with hub.subscribe(["cam"]) as slow, hub.subscribe([]) as everything, \
                hub.subscribe(["other"]) as other:
            for frame_id in range(10):
                await hub.publish(inference_pb2.InferenceResult(stream_id="cam", frame_id=frame_id))
            received = [await slow.next() for _ in range(3)]
            hub.close()
            assert await slow.next() is None
            assert await other.next() is None
            return received, everything.dropped_total, sum(dropped)

    received, everything_dropped, total_dropped = run(scenario())
    assert [(r.result.frame_id, r.dropped) for r in received] == [(7, 7), (8, 0), (9, 0)]
    assert received[1].sequence == received[0].sequence + 1 == received[2].sequence - 1
    assert everything_dropped == 7 and total_dropped == 14


def test_a_subscription_sees_only_what_it_named_and_may_read() -> None:
    async def scenario():
        hub = SubscriberHub(capacity=10)
        async with hub.subscribe([], permits=lambda s: s.startswith("site-a/")) as allowed:
            for stream_id in ("site-a/cam-1", "site-b/cam-1", "site-a/cam-2"):
                await hub.publish(inference_pb2.InferenceResult(stream_id=stream_id))
            seen = [(await allowed.next()).result.stream_id for _ in range(len(allowed))]
        async with hub.subscribe(["site-b/cam-1"], after_sequence=1, permits=lambda s: s.startswith("site-a/")) as no:
            return seen, len(no)

    assert run(scenario()) == (["site-a/cam-1", "site-a/cam-2"], 0)


def test_a_subscriber_queue_is_bounded_in_bytes_and_resumes_from_the_history() -> None:
    async def scenario():
        hub = SubscriberHub(capacity=100, max_bytes=3000)
        big = "x" * 900
        async with hub.subscribe([]) as subscription:
            for frame_id in range(10):
                await hub.publish(inference_pb2.InferenceResult(stream_id="cam", frame_id=frame_id, model=big))
            assert subscription.queued_bytes <= 3000 and len(subscription) == 3
            first = await subscription.next()
        async with hub.subscribe(["cam"], after_sequence=first.sequence) as resumed:
            again = [await resumed.next() for _ in range(2)]
        return first, again

    first, again = run(scenario())
    assert (first.result.frame_id, first.dropped) == (7, 7)
    assert [(r.result.frame_id, r.dropped) for r in again] == [(8, 0), (9, 0)]


def test_a_result_that_waited_longer_than_the_max_lag_is_dropped_when_it_would_be_sent() -> None:
    async def scenario():
        hub = SubscriberHub(capacity=100, max_lag_s=0.2)
        async with hub.subscribe(["cam"]) as subscription:
            for frame_id in range(3):
                await hub.publish(inference_pb2.InferenceResult(stream_id="cam", frame_id=frame_id))
            await asyncio.sleep(0.3)  # all three are too old now, the newest as well
            waiting = asyncio.ensure_future(subscription.next())
            await asyncio.sleep(0.05)
            assert not waiting.done()  # nothing fresh to send
            await hub.publish(inference_pb2.InferenceResult(stream_id="cam", frame_id=3))
            return await asyncio.wait_for(waiting, 5), subscription.dropped_total

    response, dropped_total = run(scenario())
    assert (response.result.frame_id, response.dropped, dropped_total) == (3, 3, 3)
    assert 0 <= response.queued_seconds < 0.2


def test_a_subscription_with_credits_hands_out_only_what_was_granted() -> None:
    async def scenario():
        hub = SubscriberHub(capacity=100)
        async with hub.subscribe(["cam"]) as subscription:
            subscription.grant(2)
            for frame_id in range(5):
                await hub.publish(inference_pb2.InferenceResult(stream_id="cam", frame_id=frame_id))
            first = [(await subscription.next()).result.frame_id for _ in range(2)]
            third = asyncio.ensure_future(subscription.next())
            await asyncio.sleep(0.05)
            held = not third.done()
            subscription.grant(1)
            return first, held, (await asyncio.wait_for(third, 5)).result.frame_id, len(subscription)

    first, held, third, left = run(scenario())
    assert first == [0, 1] and held and third == 2 and left == 2


def test_subscriber_and_identity_limits_are_checked_and_the_identity_cap_defaults_to_half_the_slots() -> None:
    from splitinfer.errors import ServiceError
    from splitinfer.services.cloud.server import CloudConfig

    with pytest.raises(ServiceError, match="subscriber-max-lag must be 0"):
        CloudConfig(plaintext=True, subscriber_max_lag_s=-1)
    with pytest.raises(ServiceError, match="max-streams-per-identity must be 0"):
        CloudConfig(plaintext=True, max_streams_per_identity=-1)
    assert CloudConfig(plaintext=True, max_streams=16).identity_stream_cap == 8
    assert CloudConfig(plaintext=True, max_streams=1).identity_stream_cap == 1
    assert CloudConfig(plaintext=True, max_streams_per_identity=0).identity_stream_cap is None
    assert CloudConfig(plaintext=True, max_streams_per_identity=3).identity_stream_cap == 3


def test_a_disconnecting_client_leaves_no_task_behind(engine, frames) -> None:
    async def scenario():
        async with running_cloud(engine) as server:
            baseline = len(asyncio.all_tasks())
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                stream = Stream(channel)
                await stream.open()
                for frame_id in range(4):
                    await stream.send(frame_request(frames[frame_id], frame_id))
                await stream.receive()
                assert server.registry.open_streams == 1
                stream.call.cancel()
            for _ in range(200):
                if server.registry.open_streams == 0 and len(asyncio.all_tasks()) <= baseline:
                    break
                await asyncio.sleep(0.05)
            readers = [t for t in asyncio.all_tasks() if t.get_name().startswith("infer-reader")]
            return server.registry.open_streams, server.servicer._active_calls, readers

    open_streams, active_calls, readers = run(scenario())
    assert open_streams == 0 and active_calls == 0 and readers == []


def test_a_reconnect_with_the_same_stream_id_takes_the_stream_over(engine, frames) -> None:
    async def scenario():
        async with running_cloud(engine) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                old, new = Stream(channel), Stream(channel)
                await old.open(stream_id="cam")
                await old.send(frame_request(frames[0], 0))
                await old.receive()
                await new.open(stream_id="cam")
                old_status = await old.status()
                await new.send(frame_request(frames[1], 1))
                answer = await new.receive()
                return old_status, answer, server.registry.open_streams

    (code, details), answer, open_streams = run(scenario())
    assert code == grpc.StatusCode.ABORTED and "newer connection" in details
    assert answer.result.frame_id == 1 and not answer.result.HasField("error") and open_streams == 1


def test_shutdown_answers_queued_frames_then_ends_streams_with_unavailable(engine, frames) -> None:
    async def scenario():
        async with running_cloud(engine, stream_queue=8) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                stream = Stream(channel)
                await stream.open()
                for frame_id in range(6):
                    await stream.send(frame_request(frames[frame_id], frame_id))
                first = await stream.receive()
                shutdown = asyncio.create_task(server.shutdown())
                answered = [first.result.frame_id]
                try:
                    while True:
                        response = await stream.receive()
                        if response is grpc.aio.EOF:
                            break
                        answered.append(response.result.frame_id)
                except grpc.aio.AioRpcError as exc:
                    status = exc.code()
                await asyncio.wait_for(shutdown, 30)
                health = server.health._server_status[SERVICE]
                return answered, status, health

    answered, status, health = run(scenario())
    assert status == grpc.StatusCode.UNAVAILABLE
    # Every frame was sent (and queued) before the shutdown began: all are answered.
    assert answered == list(range(6))
    assert health == health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_frame_resent_after_a_reconnect_reaches_subscribers_once(engine, frames) -> None:
    from splitinfer.clients import ResultSubscriber

    async def scenario():
        async with running_cloud(engine) as server:
            address = f"127.0.0.1:{server.port}"
            async with ResultSubscriber(address, ["cam"], security=PLAINTEXT) as subscriber, \
                    grpc.aio.insecure_channel(address, options=channel_options()) as channel:
                await subscriber.wait_subscribed()
                first = Stream(channel)
                await first.open(stream_id="cam")
                await first.send(frame_request(frames[0], 0))
                await first.receive()
                resumed = Stream(channel)
                await resumed.open(stream_id="cam")
                await resumed.send(frame_request(frames[0], 0))  # the same frame, resent
                await resumed.receive()
                restarted = frame_request(frames[0], 0)  # a restarted edge: frame 0 again, captured later
                restarted.frame.capture.capture_time.FromNanoseconds(frames[0].capture.capture_time.ToNanoseconds() + 1)
                await resumed.send(restarted)
                await resumed.receive()
                seen = []
                iterator = aiter(subscriber)
                for _ in range(2):
                    seen.append((await asyncio.wait_for(anext(iterator), 30)).result)
                # Nothing else is waiting for the subscriber: the resent frame was not published again.
                return seen, [len(s._queue) for s in server.hub._subscriptions]

    seen, queued = run(scenario())
    times = [r.capture.capture_time.ToNanoseconds() for r in seen]
    assert [r.frame_id for r in seen] == [0, 0] and times[1] == times[0] + 1
    assert queued == [0]


def test_server_metadata_describes_the_model_cut_coders_and_limits(engine) -> None:
    from splitinfer.v1 import inference_pb2_grpc

    async def scenario():
        async with running_cloud(engine, max_streams=3) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                default = await stub.GetServerMetadata(inference_pb2.GetServerMetadataRequest(), timeout=30)
                at_cut = await stub.GetServerMetadata(inference_pb2.GetServerMetadataRequest(cut=CUT), timeout=30)
                with pytest.raises(grpc.aio.AioRpcError) as unknown:
                    await stub.GetServerMetadata(inference_pb2.GetServerMetadataRequest(model="nope"), timeout=30)
                return default, at_cut, unknown.value

    default, at_cut, unknown = run(scenario())
    model = default.models[0]
    assert model.name == MODEL and model.task == "detection" and model.class_names[0] == "person"
    assert model.default_cut == default.cut.cut and CUT in model.cuts
    assert [(t.name, list(t.shape)) for t in at_cut.cut.tensors] == [(f"layer{CUT}", [48, 20, 20])]
    assert {c.coder for c in default.coders} >= {1, 2, 3, 4} and all(c.version >= 1 for c in default.coders)
    assert default.limits.max_streams == 3 and not default.limits.results_bus
    assert unknown.code() == grpc.StatusCode.FAILED_PRECONDITION and "nope" in unknown.details()
