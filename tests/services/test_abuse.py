"""Hostile clients over real gRPC on loopback: the cloud's slots, memory and an honest stream survive them.

Each case runs a real cloud (the session's model) and a concurrent honest stream, and checks after the
abuse: no stream slot is held, the process's resident memory grew by less than a stated bound, and
the honest stream got one error-free result per frame. Counts are small so that the suite stays
short; bench/soak.py and the fuzz harness (tests/fuzz/) run longer. Each case names the defect of
issue #13 that it failed on before the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from splitinfer.channel_options import channel_options
from splitinfer.services.cloud.streams import peer_address
from splitinfer.services.stages import STAGES
from splitinfer.v1 import inference_pb2, inference_pb2_grpc
from tests.services.conftest import CUT, MODEL, PLAINTEXT, encoded_frames, run, running_cloud
from tests.services.test_bad_input import Stream, frame_request, start

# Growth of the resident set that any case below may cause (the label flood alone added ~90 MB before).
RSS_BOUND_BYTES = 48 * 1024 * 1024


@pytest.fixture(scope="module")
def frames(model, video) -> list:
    return encoded_frames(model, video, 4)


def rss_bytes() -> int:
    """This process's resident set (the in-process cloud's memory), from /proc."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("resident memory is read from /proc/self/status (Linux only)")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line in /proc/self/status")


class HonestStream:
    """A well-behaved stream that sends a real frame and reads its result, over and over, until stopped."""

    def __init__(self, channel: grpc.aio.Channel, frames: list, stream_id: str = "honest") -> None:
        self.stream = Stream(channel)
        self.frames = frames
        self.stream_id = stream_id
        self.results: list[inference_pb2.InferenceResult] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> HonestStream:
        await self.stream.open(stream_id=self.stream_id)
        self._task = asyncio.create_task(self._run())
        while not self.results:  # at least one answer before the abuse starts
            await asyncio.sleep(0.02)
        return self

    async def _run(self) -> None:
        frame_id = 0
        while not self._stop.is_set():
            await self.stream.send(frame_request(self.frames[frame_id % len(self.frames)], frame_id))
            self.results.append((await self.stream.receive()).result)
            frame_id += 1
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        await self._task
        await self.stream.send(frame_request(self.frames[0], 10**6))  # one more, after the abuse ended
        self.results.append((await self.stream.receive()).result)
        await self.stream.call.done_writing()
        assert (await self.stream.status())[0] == grpc.StatusCode.OK

    def check(self) -> None:
        assert len(self.results) >= 2
        assert all(not r.HasField("error") for r in self.results), [r.error for r in self.results if r.error.code]


async def settle(server, open_streams: int) -> None:
    """Wait (bounded) until the cloud holds `open_streams` streams and as many calls."""
    for _ in range(200):
        if server.registry.open_streams == open_streams and server.servicer._active_calls == open_streams:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the cloud still holds {server.registry.open_streams} stream slot(s) and "
                         f"{server.servicer._active_calls} call(s), expected {open_streams}")


def metric(server, sample: str) -> float:
    """The value of one sample line of the cloud's /metrics text (0 if absent)."""
    for line in server.metrics.exposition().decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def error_reason(error: grpc.aio.AioRpcError) -> str:
    info = error_details_pb2.ErrorInfo()
    status = rpc_status.from_call(error)
    assert status is not None and any(detail.Unpack(info) for detail in status.details)
    return info.reason


async def status_error(stream: Stream) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while await stream.receive() is not grpc.aio.EOF:
            pass
    return caught.value


# -- 1. stream slots leaked by open/cancel churn -------------------------------------------------------------


class _Peer:
    """The ServicerContext methods Infer (and the authentication it needs) calls when no call is refused."""

    @staticmethod
    def peer() -> str:
        return "ipv4:127.0.0.1:40000"

    @staticmethod
    def invocation_metadata() -> tuple:
        return ()

    @staticmethod
    def auth_context() -> dict:
        return {}


def test_a_second_cancellation_during_cleanup_does_not_leak_the_stream_slot(engine) -> None:
    """Issue #13 item 1, made deterministic: gRPC cancels the handler, and cancels it again while it cleans up.

    The timing cannot be forced through a socket, so the servicer of a real cloud is driven directly, with the
    start message and the context's peer() the only stand-ins; before the fix the slot stayed taken.
    """

    async def scenario():
        async with running_cloud(engine, max_streams=1) as server:
            blocked = asyncio.Event()

            async def requests():
                yield start(stream_id="cancelled-twice")
                await blocked.wait()

            async def drive():
                from splitinfer.services.cloud.access import AccessPolicy
                from splitinfer.services.cloud.authentication import CALLER, CallCredentials, Caller

                # What the authentication interceptor does before the handler runs, for an open cloud.
                credentials = CallCredentials(_Peer(), AccessPolicy())
                CALLER.set(Caller(credentials.authenticate(), credentials))
                async for _ in server.servicer.Infer(requests(), _Peer()):
                    pass

            task = asyncio.create_task(drive())
            await settle(server, 1)
            task.cancel()  # the client went away: the handler unwinds into its finally...
            await asyncio.sleep(0)
            task.cancel()  # ...and is cancelled again while it waits for its reader task there
            await asyncio.gather(task, return_exceptions=True)
            await settle(server, 0)

    run(scenario())


def test_open_cancel_churn_leaves_no_slot_behind_and_an_honest_stream_is_served(engine, frames) -> None:
    async def scenario():
        async with running_cloud(engine, max_streams=8) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                async with HonestStream(channel, frames) as honest:
                    before = rss_bytes()

                    async def churn(i: int) -> None:
                        call = stub.Infer()
                        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                            await call.write(start(stream_id=f"churn-{i}"))
                            if i % 3 == 0:
                                await call.read()  # cancel once accepted
                            elif i % 3 == 1:
                                await asyncio.sleep(0.001 * (i % 5))  # cancel around the start check
                        call.cancel()

                    for first in range(0, 300, 6):
                        await asyncio.gather(*(churn(i) for i in range(first, first + 6)))
                    await settle(server, 1)  # only the honest stream
                    grown = rss_bytes() - before
                # Every slot is free again: max_streams new streams are accepted.
                streams = [Stream(channel) for _ in range(8)]
                for i, stream in enumerate(streams):
                    await stream.open(stream_id=f"after-churn-{i}")
                for stream in streams:
                    stream.call.cancel()
                await settle(server, 0)
        return honest, grown

    honest, grown = run(scenario())
    honest.check()
    assert grown < RSS_BOUND_BYTES, grown


# -- 2. client-chosen metric labels ---------------------------------------------------------------------------


def _with_stages(frame, stages: dict) -> inference_pb2.FeatureFrame:
    flooded = inference_pb2.FeatureFrame()
    flooded.CopyFrom(frame)
    flooded.edge_stage_seconds.update(stages)
    return flooded


def test_unknown_stage_names_are_dropped_and_counted_never_label_values(engine, frames) -> None:
    keys_per_frame, flood_frames = 1000, 40

    async def scenario():
        async with running_cloud(engine) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                async with HonestStream(channel, frames) as honest:
                    before = rss_bytes()
                    flooder = Stream(channel)
                    await flooder.open(stream_id="flooder")
                    results = []
                    for i in range(flood_frames):
                        junk = {f"junk-{i}-{k}": 0.001 for k in range(keys_per_frame)}
                        junk.update({"head": float("nan"), "encode": -1.0, "capture": 0.004})
                        await flooder.send(frame_request(_with_stages(frames[i % len(frames)], junk), i))
                        results.append((await flooder.receive()).result)
                    grown = rss_bytes() - before
                    exposition = server.metrics.exposition().decode()
                    ignored = metric(server, "splitinfer_ignored_stage_entries_total")
        return honest, results, grown, exposition, ignored

    honest, results, grown, exposition, ignored = run(scenario())
    honest.check()
    assert all(not r.HasField("error") for r in results)
    assert all(set(r.stage_seconds) <= set(STAGES) and r.stage_seconds["capture"] == 0.004 for r in results)
    assert all("head" not in r.stage_seconds and "encode" not in r.stage_seconds for r in results)
    assert ignored == flood_frames * (keys_per_frame + 2)
    labels = {line.split('stage="')[1].split('"')[0] for line in exposition.splitlines()
              if line.startswith("splitinfer_stage_seconds_count{")}
    assert labels <= set(STAGES) and "junk" not in exposition
    assert grown < RSS_BOUND_BYTES, grown


# -- 3. amplification: results echo no unbounded client data ---------------------------------------------------


def test_a_stage_map_near_the_message_limit_is_not_echoed_and_the_stream_goes_on(engine, frames) -> None:
    limit = 1024 * 1024

    async def scenario():
        async with running_cloud(engine, max_message_bytes=limit) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options(limit)) as channel:
                async with HonestStream(channel, frames) as honest:
                    stream = Stream(channel)
                    await stream.open(stream_id="oversized-map")
                    answers = []
                    for i in range(3):
                        big = _with_stages(frames[i], {f"{k:07d}" + "s" * 100: 1.0 for k in range(8000)})
                        assert limit * 0.8 < big.ByteSize() < limit - 1024
                        await stream.send(frame_request(big, i))
                        answers.append((await stream.receive()).result)
                    await stream.send(frame_request(frames[3], 3))  # the stream is still open
                    answers.append((await stream.receive()).result)
        return honest, answers

    honest, answers = run(scenario())
    honest.check()
    assert [a.frame_id for a in answers] == [0, 1, 2, 3]
    assert all(not a.HasField("error") and a.ByteSize() < 16 * 1024 for a in answers), [a.ByteSize() for a in answers]


def test_client_text_and_unknown_fields_are_not_echoed_into_results(engine, frames) -> None:
    """A frame just under the message limit whose error (quoting its tensor name) or echoed capture would exceed
    the limit: before the fix the result could not be sent and the stream ended with RESOURCE_EXHAUSTED."""
    limit = 1024 * 1024

    async def scenario():
        async with running_cloud(engine, max_message_bytes=limit) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options(limit)) as channel:
                stream = Stream(channel)
                await stream.open(stream_id="echo")
                named = inference_pb2.FeatureFrame()
                named.CopyFrom(frames[0])
                # repr() of a control character takes 4 characters: an error quoting it whole outgrew the frame.
                named.tensors[0].name = "\x01" * (limit // 4)
                stuffed = inference_pb2.FeatureFrame()
                stuffed.CopyFrom(frames[1])
                # field 99 of CaptureInfo (unknown to the cloud) holding 900 kB: a length-delimited field.
                junk = b"\x9a\x06" + _varint(900_000) + b"x" * 900_000
                stuffed.capture.MergeFromString(junk)
                answers = []
                for i, frame in enumerate((named, stuffed, frames[2])):
                    await stream.send(frame_request(frame, i))
                    answers.append((await stream.receive()).result)
        return answers

    named, stuffed, good = run(scenario())
    assert named.error.code == 3 and len(named.error.message) < 1024
    assert not stuffed.HasField("error") and stuffed.ByteSize() < 16 * 1024
    assert not good.HasField("error")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_client_chosen_model_and_cut_strings_are_refused_briefly(engine, frames) -> None:
    """A million-digit cut used to reach int() in the model's cut parser (ValueError: the handler crashed and the
    client saw UNKNOWN); a long unknown model name was quoted whole in the status details. Another spelling of
    a valid cut ("0080") is still accepted."""

    async def scenario():
        async with running_cloud(engine) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                refusals = []
                for field, value in (("model", "x" * 1_000_000), ("cut", "0" * 1_000_000 + CUT)):
                    stream = Stream(channel)
                    await stream.send(start(stream_id=f"long-{field}", **{field: value}))
                    refusals.append(await status_error(stream))
                spelled = Stream(channel)
                accepted = await spelled.open(stream_id="spelled", cut="00" + CUT)
                await spelled.send(frame_request(frames[0], 0))
                answer = (await spelled.receive()).result
        return refusals, accepted, answer

    refusals, accepted, answer = run(scenario())
    for refusal in refusals:
        assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION, refusal
        assert len(refusal.details()) < 1024 and error_reason(refusal) == "UNKNOWN_MODEL_OR_CUT"
    assert list(accepted.tensor_names) == [f"layer{CUT}"] and not answer.HasField("error")


# -- 4. slot squatting ---------------------------------------------------------------------------------------


def test_idle_streams_are_ended_with_stream_idle_and_free_their_slots(engine, frames) -> None:
    async def scenario():
        async with running_cloud(engine, max_streams=3, stream_idle_timeout_s=0.5) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                async with HonestStream(channel, frames) as honest:  # sends every 50 ms: never idle
                    squatters = [Stream(channel) for _ in range(2)]
                    for i, squatter in enumerate(squatters):
                        await squatter.open(stream_id=f"squatter-{i}")
                    silent = Stream(channel)  # never sends its StreamStart
                    errors = [await status_error(stream) for stream in (*squatters, silent)]
                    await settle(server, 1)
                    newcomer = Stream(channel)
                    await newcomer.open(stream_id="newcomer")
                    await newcomer.send(frame_request(frames[0], 0))
                    answer = (await newcomer.receive()).result
                    await newcomer.call.done_writing()
                    idle_count = metric(server, "splitinfer_idle_streams_total")
        return honest, errors, answer, idle_count

    honest, errors, answer, idle_count = run(scenario())
    honest.check()  # it streamed (and ended with OK) from before the squatters opened until after they were ended
    for error in errors:
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "--stream-idle-timeout" in error.details()
        assert error_reason(error) == "STREAM_IDLE"
    assert not answer.HasField("error") and idle_count == 3


def test_empty_keepalive_frames_do_not_hold_a_slot_past_the_idle_timeout(engine, frames) -> None:
    async def scenario():
        async with running_cloud(engine, max_streams=2, stream_idle_timeout_s=1.0) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                async with HonestStream(channel, frames) as honest:
                    squatter = Stream(channel)
                    await squatter.open(stream_id="keepalive-squatter")

                    async def keep_alive() -> None:  # an empty frame every 0.2 s: answered with an error each time
                        for frame_id in range(10_000):
                            await squatter.send(inference_pb2.InferRequest(frame=inference_pb2.FeatureFrame(
                                frame_id=frame_id)))
                            await asyncio.sleep(0.2)

                    sender = asyncio.create_task(keep_alive())
                    try:
                        answers: list[int] = []
                        code, details = await asyncio.wait_for(squatter.status_collecting(answers), 30)
                    finally:
                        sender.cancel()
                        await asyncio.gather(sender, return_exceptions=True)
        return honest, code, details, answers

    honest, code, details, answers = run(scenario())
    honest.check()  # real frames keep a stream open through many idle periods
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "keepalive" in details
    assert answers  # the empty frames were answered (with errors) and still did not count as activity


@pytest.mark.slow
def test_sixteen_keepalive_squatters_with_one_token_leave_room_for_another_identitys_edge(engine, frames,
                                                                                         tmp_path) -> None:
    from splitinfer.services.cloud.access import hash_token
    from tests.services.certificates import Authority
    from tests.services.test_security import EDGE_B, error_reason as reason_of, token_security, write_access_file

    squatter_token = "token-of-a-squatter"
    ca = Authority(tmp_path, "squat-ca")
    pki = {"ca": ca, "server": ca.issue("cloud.test", server=True, file_stem="server")}
    access = write_access_file(tmp_path / "access.yaml", squatter={
        "tokens_sha256": [hash_token(squatter_token)], "publish": ["squat/*"], "subscribe": []})

    async def scenario():
        # Every limit at its default: only TLS and the access file are configured.
        async with running_cloud(engine, tls_cert=pki["server"].cert, tls_key=pki["server"].key,
                                 auth_tokens=access) as server:
            address = f"127.0.0.1:{server.port}"
            squatting = token_security(pki, tmp_path, squatter_token).aio_channel(address, channel_options())
            held, refusals = [], []
            for i in range(16):
                squatter = Stream(squatting)
                try:
                    await squatter.open(stream_id=f"squat/{i}")
                    await squatter.send(inference_pb2.InferRequest(frame=inference_pb2.FeatureFrame(frame_id=0)))
                    held.append(squatter)
                except grpc.aio.AioRpcError as exc:
                    refusals.append(reason_of(exc))
            edge_b = token_security(pki, tmp_path, EDGE_B).aio_channel(address, channel_options())
            edge = Stream(edge_b)
            await asyncio.wait_for(edge.open(stream_id="site-b/cam-1"), 5)
            await edge.send(frame_request(frames[0], 0))
            answer = (await edge.receive()).result
            await edge_b.close()
            await squatting.close()
            return len(held), refusals, answer

    held, refusals, answer = run(scenario())
    assert held == 8 and refusals == ["IDENTITY_MAX_STREAMS"] * 8  # half of the default --max-streams 16
    assert not answer.HasField("error")


def test_streams_from_one_address_are_capped_and_a_takeover_is_not_a_new_stream(engine, frames) -> None:
    async def scenario():
        async with running_cloud(engine, max_streams=8, max_streams_per_peer=2) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                first, second, third, takeover = (Stream(channel) for _ in range(4))
                await first.open(stream_id="peer-1")
                await second.open(stream_id="peer-2")
                await third.send(start(stream_id="peer-3"))
                refused = await status_error(third)
                await takeover.open(stream_id="peer-2")  # same id: replaces, does not add
                taken_over = await status_error(second)
                first.call.cancel()
                await settle(server, 1)
                again = Stream(channel)
                await again.open(stream_id="peer-3")
                await again.send(frame_request(frames[0], 0))
                answer = (await again.receive()).result
        return refused, taken_over, answer

    refused, taken_over, answer = run(scenario())
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-streams-per-peer" in refused.details()
    assert error_reason(refused) == "MAX_STREAMS_PER_PEER"
    assert taken_over.code() == grpc.StatusCode.ABORTED
    assert not answer.HasField("error")


@pytest.mark.parametrize(("peer", "address"), [
    ("ipv4:10.0.0.7:53122", "ipv4:10.0.0.7"),
    ("ipv6:[::1]:50051", "ipv6:[::1]"),
    ("ipv6:%5B2001:db8::1%5D:443", "ipv6:%5B2001:db8::1%5D"),
    ("unix:/run/splitinfer.sock", "unix:/run/splitinfer.sock"),
    ("", ""),
])
def test_the_peer_address_drops_only_the_port(peer, address) -> None:
    assert peer_address(peer) == address


def test_an_edge_refused_because_the_cloud_is_full_says_so_when_it_gives_up(engine, model, video) -> None:
    from splitinfer.services.edge.app import EdgeSettings, build_pipeline, run_edge
    from splitinfer.errors import CloudUnavailableError

    async def scenario():
        async with running_cloud(engine, max_streams=1) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:
                squatter = Stream(channel)
                await squatter.open(stream_id="squatter")
                settings = EdgeSettings(security=PLAINTEXT, source=str(video), cloud=f"127.0.0.1:{server.port}", stream_id="locked-out",
                                        model=MODEL, frames=2, give_up_after_s=0.5)
                await run_edge(settings, [], pipeline=build_pipeline(settings, model))

    with pytest.raises(CloudUnavailableError) as caught:
        run(scenario())
    message = str(caught.value)
    assert "full" in message and "--max-streams" in message and "check that" not in message


def test_the_frame_queue_is_bounded_in_bytes() -> None:
    """Frames wait in a stream's queue only up to --stream-queue-bytes; one frame always fits, however large."""
    from splitinfer.services.cloud.servicer import _FrameQueue

    async def scenario():
        queue = _FrameQueue(max_frames=64, max_bytes=1000)
        frame = inference_pb2.FeatureFrame()
        await asyncio.wait_for(queue.put_frame(frame, 600), 1)
        third = asyncio.create_task(queue.put_frame(frame, 600))  # 1200 > 1000: waits
        await asyncio.sleep(0.05)
        waited = not third.done()
        queue.get_nowait()
        await asyncio.wait_for(third, 1)
        queue.get_nowait()
        await asyncio.wait_for(queue.put_frame(frame, 5000), 1)  # alone in the queue: let through
        return waited

    assert run(scenario())


# -- 7. SIGTERM while an edge is still starting ----------------------------------------------------------------


def _catches_sigterm(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGTERM (the SigCgt mask of /proc/PID/status), so that a test can
    signal it at the earliest moment that means anything, however slow the machine is that day."""
    import signal

    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["importing", "loading the model", "reconnecting"])
def test_sigterm_while_the_edge_starts_ends_it_cleanly(video, weights_dir, tmp_path, moment) -> None:
    """Issue #13: SIGTERM before the edge streamed ended it with a bare 143 (or, while reconnecting, not at all
    until the reconnect timeout); now a message and exit code 0, as a SIGTERM later does."""
    import signal
    import subprocess
    import sys
    import time

    from tests.services.conftest import REPO, free_port

    log = tmp_path / "edge.log"
    waits_for = {"importing": None, "loading the model": "using the codec profile",
                 "reconnecting": "reconnecting in"}[moment]
    with open(log, "w") as sink:
        edge = subprocess.Popen([sys.executable, "-m", "splitinfer.cli", "edge", "--source", str(video), "--cloud",
                                 f"127.0.0.1:{free_port()}", "--plaintext", "--connect-timeout", "0",
                                 "--weights", str(weights_dir), "--frames", "3",
                                 "--reconnect-timeout", "300"], stdout=subprocess.DEVNULL, stderr=sink, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            deadline = time.monotonic() + 120
            while waits_for and waits_for not in log.read_text():
                assert edge.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            if not waits_for:  # as soon as the edge handles SIGTERM (before that the default action kills any process)
                while not _catches_sigterm(edge.pid):
                    assert edge.poll() is None and time.monotonic() < deadline, log.read_text()
                    time.sleep(0.01)
            edge.send_signal(signal.SIGTERM)
            code = edge.wait(timeout=120)
        finally:
            edge.kill()
            edge.wait()
    text = log.read_text()
    assert code == 0, text
    assert "stopped" in text and "Traceback" not in text, text
