"""The results bus on a real nats-server (JetStream): any replica serves any stream, positions resume exactly."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from grpc_status import rpc_status
from hypothesis import given
from hypothesis import strategies as st

from splitinfer.channel_options import channel_options
from splitinfer.clients import ResultSubscriber
from splitinfer.results import PROTOBUF_CONTENT_TYPE, SCHEMA_ID
from splitinfer.services.cloud.bus import STREAM_NAME, results_subject, stream_id_from_token, subject_token
from splitinfer.services.cloud.servicer import STREAM_ID_PATTERN
from splitinfer.v1 import inference_pb2
from tests.services.conftest import PLAINTEXT, encoded_frames, run, running_cloud
from tests.services.nats_server import nats_server  # noqa: F401 - a fixture
from tests.services.test_bad_input import Stream, frame_request

STREAM = "site-a/cam.1"


@pytest.fixture(scope="module")
def frames(model, video) -> list:
    return encoded_frames(model, video, 4)


@given(st.from_regex(STREAM_ID_PATTERN, fullmatch=True))
def test_a_stream_id_is_one_subject_token_and_comes_back(stream_id: str) -> None:
    token = subject_token(stream_id)
    assert token and not set(token) & set(".*> /") and stream_id_from_token(token) == stream_id


def test_subject_of_a_stream_with_a_slash() -> None:
    assert results_subject("site-a/cam-1") == "splitinfer.results.site-a%2Fcam-1"


async def collect(subscriber: ResultSubscriber, count: int) -> list:
    iterator = aiter(subscriber)
    return [await asyncio.wait_for(anext(iterator), 30) for _ in range(count)]


def test_a_subscriber_on_another_replica_gets_every_result_in_order_and_resumes_exactly(
        engine, frames, nats_server) -> None:
    import nats

    async def scenario():
        async with running_cloud(engine, nats=nats_server.url, nats_json=True) as cloud_a, \
                running_cloud(engine, nats=nats_server.url) as cloud_b:
            b = f"127.0.0.1:{cloud_b.port}"
            async with ResultSubscriber(b, [STREAM], security=PLAINTEXT) as on_b, ResultSubscriber(b, ["other"], security=PLAINTEXT) as other:
                await on_b.wait_subscribed()
                await other.wait_subscribed()
                async with grpc.aio.insecure_channel(f"127.0.0.1:{cloud_a.port}", options=channel_options()) as ch:
                    stream = Stream(ch)
                    await stream.open(stream_id=STREAM)
                    answers = []
                    for frame_id, frame in enumerate(frames):
                        await stream.send(frame_request(frame, frame_id))
                        answers.append((await stream.receive()).result)
                    resent = Stream(ch)  # a reconnect that resends the last frame: stored once
                    await resent.open(stream_id=STREAM)
                    await resent.send(frame_request(frames[-1], len(frames) - 1))
                    await resent.receive()
                received = await collect(on_b, len(frames))
                # The same result published by the other replica (an edge that moved there and resent it): once.
                await cloud_b.hub.publish(answers[-1])
                duplicates = cloud_b.metrics.registry.get_sample_value("splitinfer_bus_duplicate_results_total")
            # Resume from the middle, on the other replica: exactly the rest.
            async with ResultSubscriber(f"127.0.0.1:{cloud_a.port}", [STREAM],
                                        after_sequence=received[1].sequence, security=PLAINTEXT) as resumed:
                rest = await collect(resumed, len(frames) - 2)
            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            info = await js.stream_info(STREAM_NAME)
            stored = await js.get_last_msg(STREAM_NAME, results_subject(STREAM))
            event = await js.get_last_msg(STREAM_NAME, "splitinfer.events." + subject_token(STREAM))
            await nc.close()
            return answers, received, rest, info, stored, event, duplicates

    answers, received, rest, info, stored, event, duplicates = run(scenario())
    assert duplicates == 1
    assert [item.result for item in received] == answers
    assert [item.dropped for item in received] == [0] * len(frames)
    sequences = [item.sequence for item in received]
    assert sequences == sorted(set(sequences))
    assert [item.result for item in rest] == answers[2:]
    # Each result once as protobuf, once as CloudEvents; and the track event that starts the stream's tracks.
    assert info.state.messages == 2 * len(frames) + 1
    assert stored.headers["Content-Type"] == PROTOBUF_CONTENT_TYPE
    assert stored.headers["Nats-Msg-Id"].startswith(f"{STREAM}/{len(frames) - 1}@")
    assert inference_pb2.InferenceResult.FromString(stored.data) == answers[-1]
    cloudevent = json.loads(event.data)
    assert cloudevent["type"] == "io.splitinfer.v1.InferenceResult" and cloudevent["dataschema"] == SCHEMA_ID
    assert cloudevent["subject"] == STREAM and cloudevent["data"]["frame_id"] == str(len(frames) - 1)


@pytest.mark.parametrize("bus", [False, True], ids=["in-memory", "nats"])
def test_a_shutdown_ends_subscriptions_with_unavailable_and_retry_info_after_the_drained_results(
        engine, frames, bus, request) -> None:
    url = request.getfixturevalue("nats_server").url if bus else None

    async def scenario():
        async with running_cloud(engine, nats=url) as cloud:
            address = f"127.0.0.1:{cloud.port}"
            async with grpc.aio.insecure_channel(address, options=channel_options()) as channel:
                subscription = inference_pb2_grpc_stub(channel).Subscribe(inference_pb2.SubscribeRequest())
                await subscription.initial_metadata()
                stream = Stream(channel)
                await stream.open(stream_id="cam")
                for frame_id, frame in enumerate(frames):
                    await stream.send(frame_request(frame, frame_id))
                # The first answer says the cloud is reading the call; the frames behind it are queued, not yet
                # answered: the drain answers them, and subscribers get them first.
                answered: list[int] = [(await stream.receive()).result.frame_id]
                shutdown = asyncio.create_task(cloud.shutdown())
                edge = asyncio.create_task(stream.status_collecting(answered))
                got = []
                try:
                    async for response in subscription:
                        got.append(response.result.frame_id)
                except grpc.aio.AioRpcError as exc:
                    error = exc
                await shutdown
                await edge
                return got, answered, error

    got, answered, error = run(scenario())
    # Every frame the drain answered (those the cloud had read before SIGTERM) reached the subscriber first.
    assert answered and got == answered == list(range(len(answered)))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(error)
    kinds = {detail.type_url.rsplit("/", 1)[-1] for detail in status.details}
    assert kinds == {"google.rpc.ErrorInfo", "google.rpc.RetryInfo"}


def inference_pb2_grpc_stub(channel):
    from splitinfer.v1 import inference_pb2_grpc

    return inference_pb2_grpc.InferenceServiceStub(channel)


def test_an_mqtt_client_receives_the_results_through_nats_servers_mqtt_listener(engine, frames, tmp_path) -> None:
    mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed: pip install -e '.[dev]'")
    import queue

    from tests.services.nats_server import NatsServer
    from tests.services.test_subscriptions import send_frames

    server = NatsServer(tmp_path / "nats-mqtt", mqtt=True)
    received: queue.Queue = queue.Queue(maxsize=100)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="splitinfer-test")
    client.on_message = lambda _client, _userdata, message: received.put((message.topic, message.payload))
    try:
        client.connect("127.0.0.1", server.mqtt_port)
        client.loop_start()
        # NATS subject tokens are MQTT topic levels: splitinfer.results.<token> is splitinfer/results/<token>.
        topic = results_subject(STREAM).replace(".", "/")
        subscribed = client.subscribe(topic, qos=0)
        assert subscribed[0] == 0

        async def scenario():
            async with running_cloud(engine, nats=server.url) as cloud:
                await asyncio.sleep(0.5)  # the MQTT subscription is in place
                return await send_frames(f"127.0.0.1:{cloud.port}", STREAM, frames[:2])

        answers = run(scenario())
        got = [received.get(timeout=30) for _ in answers]
    finally:
        client.loop_stop()
        client.disconnect()
        server.close()
    assert [t for t, _ in got] == [topic] * len(answers)
    assert [inference_pb2.InferenceResult.FromString(payload) for _, payload in got] == answers


def test_an_unreachable_bus_is_a_clear_error_at_start() -> None:
    from splitinfer.errors import BusError
    from splitinfer.services.cloud.bus import ResultBus
    from tests.services.conftest import free_port

    bus = ResultBus(f"nats://127.0.0.1:{free_port()}", capacity=4, max_bytes=1 << 20)
    with pytest.raises(BusError, match="nats-server runs there"):
        run(bus.start(connect_timeout_s=1.0))


def test_subscribe_while_the_bus_is_away_is_unavailable_with_retry_info(engine, nats_server) -> None:
    async def scenario():
        async with running_cloud(engine, nats=nats_server.url) as cloud:
            nats_server.close()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{cloud.port}", options=channel_options()) as channel:
                call = inference_pb2_grpc_stub(channel).Subscribe(inference_pb2.SubscribeRequest())
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await asyncio.wait_for(call.read(), 60)
                return failed.value

    error = run(scenario())
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "results bus" in error.details()
    assert {d.type_url.rsplit("/", 1)[-1] for d in rpc_status.from_call(error).details} == {
        "google.rpc.ErrorInfo", "google.rpc.RetryInfo"}
