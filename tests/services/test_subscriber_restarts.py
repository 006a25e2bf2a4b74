"""Subscribers survive rolling updates: the give-up clock starts at the disconnect, not at the last result.

A quiet stream (no result for longer than the give-up window) followed by a cloud restart on the same port
must not end the subscription; a cloud that stays away longer than the window still does. The window is
made small (2 s) through the client's Backoff so that the tests are quick; the cloud is a real in-process
CloudServer on loopback, stopped and started again as a rolling update does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest

from splitinfer.clients import Backoff, ResultSubscriber, subscribe
from splitinfer.errors import CloudUnavailableError
from tests.services.conftest import PLAINTEXT, encoded_frames, free_port, run, running_cloud
from tests.services.test_subscriptions import send_frames

STREAM = "site-a/quiet-cam"
WINDOW = 2.0  # seconds without a subscription before the subscriber gives up
QUIET = 3.0  # longer than the window: the last result is older than WINDOW when the cloud goes away
BACKOFF = Backoff(initial=0.05, maximum=0.2, give_up_after=WINDOW)


@pytest.fixture(scope="module")
def frames(model, video) -> list:
    return encoded_frames(model, video, 3)


async def wait_for_subscriber(cloud, timeout: float = 20.0) -> None:
    """Until the (restarted) cloud has registered a subscription."""
    deadline = time.monotonic() + timeout
    while not len(cloud.hub):
        assert time.monotonic() < deadline, "the subscriber did not come back to the restarted cloud"
        await asyncio.sleep(0.05)


async def quiet_restarts(engine, frames: list, port: int, received: asyncio.Queue,
                         start_subscriber: Callable[[], object]) -> list:
    """Clouds one after another on `port`, one result on each, then a quiet spell longer than WINDOW and a
    restart; `start_subscriber` is called once the first cloud serves."""
    answers = []
    for frame_id, frame in enumerate(frames):
        async with running_cloud(engine, port=port) as cloud:
            if frame_id == 0:
                start_subscriber()
            await wait_for_subscriber(cloud)
            answers += await send_frames(f"127.0.0.1:{port}", STREAM, [frame], first_id=frame_id)
            got = await asyncio.wait_for(received.get(), 20)
            assert got.result == answers[-1], "the result of this cloud did not arrive"
            await asyncio.sleep(QUIET)
        await asyncio.sleep(0.3)  # the cloud is away for a moment, as between a pod's stop and its successor
    return answers


def test_a_quiet_subscriber_resumes_across_cloud_restarts(engine, frames) -> None:
    port = free_port()

    async def scenario():
        received: asyncio.Queue = asyncio.Queue()
        subscriber = ResultSubscriber(f"127.0.0.1:{port}", [STREAM], backoff=BACKOFF, security=PLAINTEXT)
        forwarding: list[asyncio.Task] = []

        async def forward() -> None:
            async with subscriber:
                async for item in subscriber:
                    await received.put(item)

        restarts = asyncio.create_task(quiet_restarts(
            engine, frames, port, received, lambda: forwarding.append(asyncio.create_task(forward()))))
        while not forwarding:
            await asyncio.sleep(0.05)
        done, _ = await asyncio.wait({forwarding[0], restarts}, return_when=asyncio.FIRST_COMPLETED)
        if forwarding[0] in done:
            restarts.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await restarts
            forwarding[0].result()  # raises why the subscriber gave up
            raise AssertionError("the subscription ended without an error")
        forwarding[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forwarding[0]
        return restarts.result(), subscriber.reconnects

    answers, reconnects = run(scenario())
    assert len(answers) == len(frames)
    assert reconnects >= len(frames) - 1


@pytest.mark.slow
def test_the_blocking_subscribe_resumes_across_cloud_restarts(engine, frames) -> None:
    port = free_port()

    async def scenario():
        loop = asyncio.get_running_loop()
        received: asyncio.Queue = asyncio.Queue()
        items = subscribe(f"127.0.0.1:{port}", [STREAM], backoff=BACKOFF, security=PLAINTEXT)

        def read() -> None:
            for item in items:
                loop.call_soon_threadsafe(received.put_nowait, item)
                if item.result.frame_id == len(frames) - 1:
                    return

        reading: list[asyncio.Future] = []
        answers = await quiet_restarts(engine, frames, port, received,
                                       lambda: reading.append(loop.run_in_executor(None, read)))
        await asyncio.wait_for(reading[0], 20)
        return answers

    assert len(run(scenario())) == len(frames)


def test_a_subscriber_still_gives_up_when_the_cloud_stays_away(engine, frames) -> None:
    port = free_port()

    async def scenario():
        async with running_cloud(engine, port=port) as cloud, \
                ResultSubscriber(f"127.0.0.1:{port}", [STREAM], backoff=BACKOFF, security=PLAINTEXT) as subscriber:
            await wait_for_subscriber(cloud)
            await send_frames(f"127.0.0.1:{port}", STREAM, frames[:1])
            await asyncio.wait_for(anext(aiter(subscriber)), 20)
            await asyncio.sleep(QUIET)
            await cloud.stop(grace=0)
            gone = time.monotonic()
            with pytest.raises(CloudUnavailableError, match="could not resubscribe"):
                await asyncio.wait_for(anext(aiter(subscriber)), 60)
            return time.monotonic() - gone

    # Not before the window has passed since the disconnect.
    assert run(scenario()) >= WINDOW
