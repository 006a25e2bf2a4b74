"""Subscriptions that survive and stay bounded, over real gRPC: slow readers, max connection age, `watch`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import jsonschema
import pytest

from splitinfer.channel_options import channel_options
from splitinfer.clients import Backoff, ResultSubscriber
from splitinfer.results import result_from_dict
from splitinfer.channel_security import ChannelSecurity
from tests.services.conftest import PLAINTEXT, REPO, encoded_frames, run, running_cloud
from tests.services.test_bad_input import Stream, frame_request

SCHEMA = json.loads((REPO / "docs" / "inference_result.schema.json").read_text())


@pytest.fixture(scope="module")
def frames(model, video) -> list:
    return encoded_frames(model, video, 6)


async def send_frames(address: str, stream_id: str, frames: list, pause: float = 0.0, first_id: int = 0,
                      security: ChannelSecurity = PLAINTEXT) -> list:
    """Stream frames on one Infer call, one at a time; the results in order."""
    async with security.aio_channel(address, channel_options()) as channel:
        stream = Stream(channel)
        await stream.open(stream_id=stream_id)
        answers = []
        for offset, frame in enumerate(frames):
            await stream.send(frame_request(frame, first_id + offset))
            answers.append((await stream.receive()).result)
            await asyncio.sleep(pause)
        await stream.call.done_writing()
        return answers


def test_a_slow_grpc_subscriber_loses_its_oldest_results_and_is_told_how_many(engine, frames) -> None:
    async def scenario():
        async with running_cloud(engine) as cloud:
            address = f"127.0.0.1:{cloud.port}"
            async with ResultSubscriber(address, ["cam"], max_queue=2, security=PLAINTEXT) as slow, \
                    ResultSubscriber(address, ["cam"], max_queue_bytes=1, security=PLAINTEXT) as tiny, \
                    ResultSubscriber(address, ["cam"], max_lag_s=0.2, security=PLAINTEXT) as laggard:
                await slow.wait_subscribed()
                await tiny.wait_subscribed()
                await laggard.wait_subscribed()
                answers = await send_frames(address, "cam", frames)
                await asyncio.sleep(0.5)  # the subscriber reads nothing meanwhile: a consumer slower than the cloud
                slow_items = [await asyncio.wait_for(anext(aiter(slow)), 10) for _ in range(2)]
                tiny_item = await asyncio.wait_for(anext(aiter(tiny)), 10)
                lagging = asyncio.ensure_future(anext(aiter(laggard)))
                answers += await send_frames(address, "cam", frames[:1], first_id=len(frames))
                lag_item = await asyncio.wait_for(lagging, 10)
                return answers, slow_items, tiny_item, lag_item

    answers, slow_items, tiny_item, lag_item = run(scenario())
    sent_first = answers[:len(frames)]
    assert [item.result for item in slow_items] == sent_first[-2:]
    assert [item.dropped for item in slow_items] == [len(sent_first) - 2, 0]
    # A queue bounded in bytes keeps only the newest result (bounded by the message size limit itself).
    assert tiny_item.result == sent_first[-1] and tiny_item.dropped == len(sent_first) - 1
    # A queue bounded in time: every result that waited over 0.2 s is dropped, the newest too (it is as stale);
    # the next fresh result comes with the count.
    assert lag_item.result == answers[-1] and lag_item.dropped == len(sent_first)


def test_subscribe_with_credits_sends_no_more_results_than_the_client_granted(engine) -> None:
    from splitinfer.v1 import inference_pb2, inference_pb2_grpc

    async def scenario():
        async with running_cloud(engine, subscriber_max_lag_s=10.0) as cloud:
            async with PLAINTEXT.aio_channel(f"127.0.0.1:{cloud.port}", channel_options()) as channel:
                call = inference_pb2_grpc.InferenceServiceStub(channel).SubscribeWithCredits()
                await call.write(inference_pb2.SubscribeWithCreditsRequest(
                    subscription=inference_pb2.SubscribeRequest(stream_ids=["cam"]), credits=2))
                headers = dict(await call.initial_metadata())
                for frame_id in range(5):
                    await cloud.hub.publish(inference_pb2.InferenceResult(stream_id="cam", frame_id=frame_id))
                first = [(await asyncio.wait_for(call.read(), 10)).item.result.frame_id for _ in range(2)]
                third = asyncio.ensure_future(call.read())
                await asyncio.sleep(0.5)
                held = not third.done()
                await call.write(inference_pb2.SubscribeWithCreditsRequest(credits=3))
                rest = [(await asyncio.wait_for(third, 10)).item.result.frame_id]
                rest += [(await asyncio.wait_for(call.read(), 10)).item.result.frame_id for _ in range(2)]
                call.cancel()
                return headers, first, held, rest

    headers, first, held, rest = run(scenario())
    assert headers["splitinfer-subscribed"] == "1" and float(headers["splitinfer-max-lag"]) == 10.0
    assert first == [0, 1] and held and rest == [2, 3, 4]


def test_a_subscriber_read_one_result_per_iterator_gets_more_than_its_credit_window(engine) -> None:
    """Credits owed to the cloud belong to the subscriber, not to one iteration: `anext(aiter(subscriber))` per
    result (a new iterator each time) must go on granting, past the first window of results."""
    from splitinfer.v1 import inference_pb2

    async def scenario():
        async with running_cloud(engine) as cloud:
            async with ResultSubscriber(f"127.0.0.1:{cloud.port}", ["cam"], window=4,
                                        security=PLAINTEXT) as subscriber:
                await subscriber.wait_subscribed()
                for frame_id in range(12):
                    await cloud.hub.publish(inference_pb2.InferenceResult(stream_id="cam", frame_id=frame_id))
                return [(await asyncio.wait_for(anext(aiter(subscriber)), 10)).result.frame_id for _ in range(12)]

    assert run(scenario()) == list(range(12))


def test_the_clients_read_a_cloud_older_than_credits_with_plain_subscribe() -> None:
    import grpc

    from splitinfer.clients import subscribe
    from splitinfer.v1 import inference_pb2, inference_pb2_grpc

    class OlderCloud(inference_pb2_grpc.InferenceServiceServicer):
        """Only Subscribe: SubscribeWithCredits answers UNIMPLEMENTED, as a cloud from before credits does."""

        async def Subscribe(self, request, context):
            await context.send_initial_metadata((("splitinfer-subscribed", "1"),))
            for frame_id in range(3):
                yield inference_pb2.SubscribeResponse(
                    result=inference_pb2.InferenceResult(stream_id="cam", frame_id=frame_id), sequence=frame_id + 1)
            await asyncio.Event().wait()  # a subscription does not end by itself

    async def scenario():
        server = grpc.aio.server()
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(OlderCloud(), server)
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        try:
            async with ResultSubscriber(address, ["cam"], security=PLAINTEXT) as results:
                iterator = aiter(results)
                streamed = [(await asyncio.wait_for(anext(iterator), 10)).result.frame_id for _ in range(3)]
            blocking = await asyncio.to_thread(
                lambda: [item.result.frame_id for item in subscribe(address, ["cam"], timeout=2, security=PLAINTEXT)])
            return streamed, blocking
        finally:
            await server.stop(0)

    assert run(scenario()) == ([0, 1, 2], [0, 1, 2])


def test_a_subscriber_resumes_across_max_connection_age_and_gets_every_result_once(engine, frames) -> None:
    async def scenario():
        async with running_cloud(engine, max_connection_age_s=1.0) as cloud:
            address = f"127.0.0.1:{cloud.port}"
            async with ResultSubscriber(address, ["cam"], backoff=Backoff(initial=0.05), security=PLAINTEXT) as subscriber:
                await subscriber.wait_subscribed()
                sending = asyncio.create_task(send_frames(address, "cam", frames, pause=0.5))
                received = [await asyncio.wait_for(anext(aiter(subscriber)), 30) for _ in frames]
                answers = await sending
                await asyncio.sleep(0.3)
                extra = len(subscriber._queue)
                return answers, received, subscriber.reconnects, extra

    answers, received, reconnects, extra = run(scenario())
    assert reconnects >= 1  # the 3 s of frames outlived the 1 s subscription age at least once
    assert [item.result for item in received] == answers and extra == 0
    assert all(item.dropped == 0 for item in received)


def test_a_final_status_is_raised_not_retried(engine) -> None:
    from splitinfer.errors import ServiceError

    async def scenario():
        async with running_cloud(engine) as cloud:
            async with ResultSubscriber(f"127.0.0.1:{cloud.port}", ["bad id"], security=PLAINTEXT) as subscriber:
                with pytest.raises(ServiceError, match="INVALID_ARGUMENT"):
                    await subscriber.wait_subscribed()
                return subscriber.reconnects

    assert run(scenario()) == 0


async def _watch(address: str, *args: str) -> tuple[str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "splitinfer.cli", "watch", "--plaintext", "--cloud", address, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO))
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return out.decode(), err.decode()


@pytest.mark.slow
def test_watch_prints_schema_records_and_unique_coco_image_ids(engine, frames, tmp_path: Path) -> None:
    images = tmp_path / "images.json"

    async def scenario():
        async with running_cloud(engine) as cloud:
            address = f"127.0.0.1:{cloud.port}"
            lines = asyncio.create_task(_watch(address, "--stream", "site-a/cam-1", "--count", "2"))
            coco = asyncio.create_task(_watch(address, "--stream", "site-a/cam-1,cam-2", "--count", "4", "--coco",
                                              "--coco-images", str(images)))
            while len(cloud.hub) < 2:
                await asyncio.sleep(0.05)
            answers = await send_frames(address, "site-a/cam-1", frames[:2])
            answers += await send_frames(address, "cam-2", frames[:2])
            return answers, await lines, await coco

    answers, (lines, _), (coco, _) = run(scenario())
    records = [json.loads(line) for line in lines.splitlines()]
    for record, answer in zip(records, answers[:2], strict=True):
        jsonschema.validate(record, SCHEMA)
        assert result_from_dict(record) == answer and int(record["sequence"]) > 0
    results = json.loads(coco)
    mapping = json.loads(images.read_text())
    assert [(m["stream_id"], m["frame_id"]) for m in mapping] == [("site-a/cam-1", 0), ("site-a/cam-1", 1),
                                                                   ("cam-2", 0), ("cam-2", 1)]
    assert {item["image_id"] for item in results} <= {1, 2, 3, 4}
    assert len({m["id"] for m in mapping}) == 4


@pytest.mark.slow
def test_watch_is_readable_on_a_terminal_and_says_what_it_waits_for(engine, frames) -> None:
    """--format table (what a terminal gets by default): one line per result with time, stream, frame and objects
    per class; on stderr the subscription, and for a stream id nobody sends, a hint at how the edge names streams."""
    import re

    async def scenario():
        async with running_cloud(engine) as cloud:
            address = f"127.0.0.1:{cloud.port}"
            table = asyncio.create_task(_watch(address, "--stream", "cam-1", "--count", "2", "--format", "table"))
            unknown = asyncio.create_task(_watch(address, "--stream", "cam-9", "--timeout", "13"))
            while len(cloud.hub) < 2:
                await asyncio.sleep(0.05)
            answers = await send_frames(address, "cam-1", frames[:2])
            return answers, await table, await unknown

    answers, (lines, table_err), (nothing, unknown_err) = run(scenario())
    assert "subscribed to cam-1 (1 stream)" in table_err
    printed = lines.splitlines()
    assert len(printed) == 2, lines
    for line, answer in zip(printed, answers, strict=True):
        assert re.fullmatch(rf"\d\d:\d\d:\d\d cam-1 #{answer.frame_id} .+", line), line
        assert not line.startswith("{")
        for label in {d.label for d in answer.detections}:
            assert f"{label} x" in line, line
    assert nothing == "" and "subscribed to cam-9 (1 stream)" in unknown_err
    assert "no result for stream cam-9" in unknown_err and "--stream-id" in unknown_err, unknown_err


def test_the_blocking_subscribe_resumes_across_max_connection_age(engine, frames) -> None:
    from splitinfer.clients import subscribe

    async def scenario():
        async with running_cloud(engine, max_connection_age_s=1.0) as cloud:
            address = f"127.0.0.1:{cloud.port}"
            loop = asyncio.get_running_loop()
            reading = loop.run_in_executor(None, lambda: [
                item for _, item in zip(frames, subscribe(address, ["cam"], security=PLAINTEXT, backoff=Backoff(initial=0.05)))])
            while not len(cloud.hub):
                await asyncio.sleep(0.05)
            answers = await send_frames(address, "cam", frames, pause=0.5)
            return answers, await asyncio.wait_for(reading, 60)

    answers, received = run(scenario())
    assert [item.result for item in received] == answers
    assert [item.sequence for item in received] == sorted({item.sequence for item in received})
