"""Done when: two cloud processes and one nats-server; an edge streams to cloud A, a subscriber on cloud B gets
every frame's result exactly once, in order, across a kill -9 and restart of A and a max connection age of 2 s."""

from __future__ import annotations

import asyncio
import signal

import pytest

from splitinfer.clients import Backoff, ResultSubscriber
from splitinfer.services.edge.app import EdgeSettings, build_pipeline, run_edge
from tests.services.conftest import MODEL, PLAINTEXT, free_port, run
from tests.services.nats_server import nats_server  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow

FRAMES = 16
STREAM = "site-a/cam-failover"


def test_a_subscriber_on_another_replica_gets_every_result_once_across_a_kill_and_max_connection_age(
        model, video, cloud_process, nats_server) -> None:
    # The subscriber reads only once the edge is done, long after the default max lag: the lag bound is off, what
    # is checked here is exactly once.
    bus = ("--nats", nats_server.url, "--max-connection-age", "2", "--subscriber-max-lag", "0")
    port_a = free_port()
    cloud_a = cloud_process(port_a, *bus)
    cloud_b = cloud_process(None, *bus)
    cloud_a.wait_serving()
    cloud_b.wait_serving()
    outcomes, restarted = [], []

    def kill_and_restart(outcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 6 and not restarted:
            cloud_a.process.send_signal(signal.SIGKILL)
            cloud_a.process.wait(timeout=30)
            restarted.append(cloud_process(port_a, *bus))

    settings = EdgeSettings(source=str(video), cloud=f"127.0.0.1:{port_a}", stream_id=STREAM, model=MODEL,
                            frames=FRAMES, window=4, mode="file", give_up_after_s=120, security=PLAINTEXT)

    async def scenario():
        async with ResultSubscriber(cloud_b.address, [STREAM], backoff=Backoff(initial=0.05), security=PLAINTEXT) as subscriber:
            await subscriber.wait_subscribed()
            stats = await run_edge(settings, [kill_and_restart], pipeline=build_pipeline(settings, model))
            received = [await asyncio.wait_for(anext(aiter(subscriber)), 60) for _ in range(FRAMES)]
            await asyncio.sleep(1.0)  # anything more (a duplicate) would have arrived by now
            return stats, received, len(subscriber._queue), subscriber.reconnects

    stats, received, extra, reconnects = run(scenario(), timeout=400)
    assert restarted, "cloud A was never killed"
    assert stats.reconnects >= 1 and stats.results == FRAMES
    assert [item.result.frame_id for item in received] == list(range(FRAMES)) and extra == 0
    assert [item.result for item in received] == [o.result for o in outcomes]
    assert sum(item.dropped for item in received) == 0
    assert reconnects >= 1  # the subscription on B was rebalanced by its 2 s age at least once
