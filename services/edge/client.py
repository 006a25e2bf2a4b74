"""The edge's side of the `Infer` stream: windowed sending, in-order results, reconnect and resume.

At most `window` frames await their results; when the cloud is slow the sender waits, so memory stays
bounded and the grabber (live mode) keeps only the newest frame. On UNAVAILABLE or a dropped connection
the streamer reconnects with exponential backoff and jitter and resumes the same stream id; in file
mode the frames that had no result yet are sent again (re-encoded from their head outputs, the first one
intra), so every frame gets exactly one result. In live mode they are counted as lost instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from splitinfer.channel_security import ChannelSecurity, connection_hint
from splitinfer.channel_options import DEFAULT_MAX_MESSAGE_BYTES, channel_options
from splitinfer.services.edge.backpressure import LinkMonitor
from splitinfer.services.edge.capture import CaptureMode, CapturedFrame, EndOfSource, FrameGrabber
from splitinfer.services.stages import CLOUD_STAGES
from splitinfer.errors import CaptureError, CloudUnavailableError, ServiceError, StreamRejectedError
from splitinfer.v1 import inference_pb2, inference_pb2_grpc

if TYPE_CHECKING:
    from splitinfer.services.edge.auto_partition import PartitionSwitcher
    from splitinfer.services.edge.partition_plan import Plan

log = logging.getLogger("splitinfer.edge")

# Codes after which retrying the same start message cannot succeed, unless the status carries RetryInfo.
_FATAL_CODES = {
    grpc.StatusCode.FAILED_PRECONDITION: "the cloud refused the stream",
    grpc.StatusCode.INVALID_ARGUMENT: "the cloud refused a message of the stream",
    # The details that follow say which of the two it was.
    # --max-streams refusals carry RetryInfo and are retried with backoff; a message over the size limit is fatal.
    grpc.StatusCode.RESOURCE_EXHAUSTED: "a message exceeded a size limit (raise --max-message-bytes on both sides)",
    grpc.StatusCode.UNIMPLEMENTED: "the server at --cloud is not a splitinfer cloud",
    grpc.StatusCode.PERMISSION_DENIED: "the cloud denied access",
    grpc.StatusCode.UNAUTHENTICATED: "the cloud requires authentication",
}


def _retry_after_s(error: grpc.aio.AioRpcError) -> float | None:
    """The delay of a google.rpc.RetryInfo the cloud attached (it says retrying helps, e.g. MAX_STREAMS), else None."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details that do not match the status: ignore them rather than fail the edge
        return None
    if status is None:
        return None
    retry = error_details_pb2.RetryInfo()
    for detail in status.details:
        if detail.Unpack(retry):
            return retry.retry_delay.ToNanoseconds() / 1e9
    return None


def _partition_name(partition: int) -> str:
    return inference_pb2.Partition.Name(partition).removeprefix("PARTITION_").lower()


class FramePipeline(Protocol):
    """What the streamer needs from the edge pipeline (splitinfer.services.edge.pipeline.EdgePipeline)."""

    def start_message(self, stream_id: str) -> inference_pb2.StreamStart: ...

    def run_head(self, frame: CapturedFrame) -> HeadOutput: ...

    def encode(self, head: HeadOutput) -> inference_pb2.FeatureFrame | None: ...  # None: dropped by rate control

    def restart_coding(self) -> None: ...

    def accepted(self, accepted: inference_pb2.StreamAccepted) -> None: ...  # what the cloud said it can do


@dataclass
class HeadOutput:
    """A frame after preprocess and head: the tensors at the cut (numpy) and the edge stage times."""

    frame: CapturedFrame
    tensors: dict
    stage_seconds: dict[str, float]

    @property
    def frame_id(self) -> int:
        return self.frame.sequence


# What the edge draws of the cloud's zones (StreamAccepted.zones): the zones file's limits (services/cloud/zones.py).
MAX_ZONE_SHAPES, MAX_ZONE_VERTICES, MAX_ZONE_COORDINATE = 64, 256, 8192.0


def drawable_zones(shapes: Iterable[inference_pb2.ZoneShape]) -> tuple[inference_pb2.ZoneShape, ...]:
    """The cloud's zones and lines that can be drawn; a malformed one (odd or too many coordinates, not finite or
    out of range, a line without two points) is left out with a warning, so it never breaks the edge's sinks."""
    kept: list[inference_pb2.ZoneShape] = []
    for shape in shapes:
        values = list(shape.coordinates)
        points = len(values) // 2
        line = shape.kind == inference_pb2.ZONE_SHAPE_KIND_LINE
        if (len(kept) >= MAX_ZONE_SHAPES or len(values) % 2
                or not (points == 2 if line else 3 <= points <= MAX_ZONE_VERTICES)
                or not all(math.isfinite(v) and 0 <= v <= MAX_ZONE_COORDINATE for v in values)):
            log.warning("the cloud sent a zone or line the edge cannot draw (%r, %d coordinates); it is not drawn",
                        shape.name[:64], len(values))
            continue
        kept.append(shape)
    return tuple(kept)


@dataclass
class FrameOutcome:
    """What the streamer hands to the output sinks once a frame's result arrived."""

    frame: CapturedFrame
    result: inference_pb2.InferenceResult
    sent_monotonic_ns: int
    received_monotonic_ns: int
    # The cloud's zones and lines for the stream (StreamAccepted.zones), drawn with the result's zone counts.
    zones: tuple[inference_pb2.ZoneShape, ...] = ()

    @property
    def latency_seconds(self) -> float:
        """Capture to result, on the edge's monotonic clock (includes waiting for a window slot)."""
        return (self.received_monotonic_ns - self.frame.monotonic_ns) / 1e9

    @property
    def pipeline_seconds(self) -> float:
        """Preprocess + head + encode, then sent to result: the latency without waiting for a window slot."""
        stages = self.result.stage_seconds
        edge = sum(stages.get(name, 0.0) for name in ("preprocess", "head", "encode"))
        return edge + (self.received_monotonic_ns - self.sent_monotonic_ns) / 1e9


@dataclass(frozen=True)
class StreamerConfig:
    """How the edge talks to the cloud."""

    cloud: str
    stream_id: str
    security: ChannelSecurity = ChannelSecurity()
    window: int = 4
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    connect_timeout_s: float = 10.0
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 5.0
    # Give up when no connection could be made for this long (0: keep trying forever).
    give_up_after_s: float = 60.0
    # Stop once this many frames have their results (None: until the source ends).
    max_results: int | None = None

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ServiceError(f"the in-flight window must be at least 1 frame, got {self.window}.")
        if not self.stream_id:
            raise ServiceError("the stream id is empty: pass --stream-id or leave it unset to use the host name.")
        if not self.cloud:
            raise ServiceError("no cloud address: pass --cloud HOST:PORT (or set SPLITINFER_CLOUD).")


@dataclass
class StreamerStats:
    sent: int = 0
    resent: int = 0
    results: int = 0
    frame_errors: int = 0
    lost_on_reconnect: int = 0
    dropped_by_rate: int = 0  # frames rate control did not send, to hold the budget (live sources)
    reconnects: int = 0
    partition_switches: int = 0  # --partition auto: calls ended to go on in another partition
    payload_bytes: int = 0
    elements: int = 0
    stage_seconds: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))


@dataclass
class _Pending:
    head: HeadOutput
    sent_monotonic_ns: int
    nbytes: int = 0


class _RetryableStreamError(Exception):
    """The connection broke in a way a reconnect can fix."""


class EdgeStreamer:
    """Runs one camera's stream to the cloud until the source ends (or `stop()` is called)."""

    def __init__(
        self,
        config: StreamerConfig,
        pipeline: FramePipeline,
        grabber: FrameGrabber,
        on_result: Callable[[FrameOutcome], None],
        *,
        executor: ThreadPoolExecutor | None = None,
        link: LinkMonitor | None = None,
        switcher: PartitionSwitcher | None = None,
    ) -> None:
        self.config = config
        self.link = link  # live streams with rate control: the link's feedback lowers and raises the budget
        # --partition auto: between frames, with nothing in flight, the stream may go on in another partition.
        self.switcher = switcher
        self._switch_to: Plan | None = None
        self.pipeline = pipeline
        self.grabber = grabber
        self.on_result = on_result
        self.stats = StreamerStats()
        self._executor = executor
        self._pending: collections.OrderedDict[int, _Pending] = collections.OrderedDict()
        self._window_changed = asyncio.Event()
        self._source_ended: EndOfSource | None = None
        # The next frame's grab + head + encode, one executor job (a thread hop costs more than the encode).
        self._job: asyncio.Future | None = None
        self._job_coding = 0  # the coding generation the job's encode ran in
        self._coding = 0  # bumped when a reconnect restarts the coder: frames coded before must be coded again
        self._carry: HeadOutput | None = None
        self._stopping = False
        self.zones: tuple[inference_pb2.ZoneShape, ...] = ()  # the cloud's zones for the stream, from its accept

    def stop(self) -> None:
        """Stop taking new frames; frames already sent still get their results."""
        self._stopping = True
        self._window_changed.set()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def run(self) -> StreamerStats:
        """Stream until the source ends and every sent frame has its result; returns the counters."""
        own_executor = self._executor is None
        executor = self._executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="edge")
        self._executor = executor
        try:
            await self._run_connections()
        finally:
            if self._job is not None:
                self._job.cancel()
            if own_executor:
                executor.shutdown(wait=False, cancel_futures=True)
        if self._source_ended is not None and self._source_ended.error:
            raise CaptureError(self._source_ended.reason)
        return self.stats

    # -- connection management -----------------------------------------------------------------
    async def _run_connections(self) -> None:
        attempt = 0
        unavailable_since: float | None = None
        options = channel_options(self.config.max_message_bytes)
        while True:
            accepted = False
            refused_for_capacity = False
            try:
                async with self.config.security.aio_channel(self.config.cloud, options) as channel:
                    call = inference_pb2_grpc.InferenceServiceStub(channel).Infer()
                    await self._open(call)
                    accepted = True
                    attempt, unavailable_since = 0, None
                    finished = await self._stream(call)
                    if finished and self._switch_to is not None:
                        await self._switch()
                        continue  # the same stream id in a new call, starting with the new partition
                    if finished:
                        return
                    raise _RetryableStreamError("the cloud ended the stream before every frame had its result")
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                retry_after_s = _retry_after_s(exc)
                if code in _FATAL_CODES and retry_after_s is None:
                    message = f"{_FATAL_CODES[code]}: {exc.details()} ({code.name})"
                    raise StreamRejectedError(message) from exc
                # RESOURCE_EXHAUSTED with RetryInfo: the cloud is up but full (a stream cap), not unreachable.
                refused_for_capacity = code == grpc.StatusCode.RESOURCE_EXHAUSTED
                reason = f"{code.name}: {exc.details()}"
            except (_RetryableStreamError, asyncio.TimeoutError, asyncio.InvalidStateError) as exc:
                reason, retry_after_s = str(exc) or "no answer from the cloud in time", None
            self._after_disconnect()
            now = time.monotonic()
            if accepted:
                unavailable_since = None
            unavailable_since = unavailable_since or now
            if self.config.give_up_after_s and now - unavailable_since > self.config.give_up_after_s:
                if refused_for_capacity:
                    raise CloudUnavailableError(
                        f"the cloud at {self.config.cloud} kept refusing the stream for "
                        f"{self.config.give_up_after_s:.0f} s because it is full (last answer: {reason}); retry "
                        "later, connect to another cloud, or ask its operator to raise its stream limits.")
                hint = connection_hint(reason, self.config.security)
                raise CloudUnavailableError(
                    f"could not reach the cloud at {self.config.cloud} for {self.config.give_up_after_s:.0f} s "
                    f"(last error: {reason}); {hint}."
                )
            delay = min(self.config.reconnect_max_s, self.config.reconnect_initial_s * 2 ** attempt)
            delay *= random.uniform(0.5, 1.0)
            if retry_after_s is not None:
                delay = max(delay, retry_after_s)
            if self._stopping:
                log.warning("stream %s: stopped while not connected (%s); %d frame(s) without a result",
                            self.config.stream_id, reason, len(self._pending))
                return
            attempt += 1
            self.stats.reconnects += 1
            log.warning("stream %s: %s; reconnecting in %.2f s", self.config.stream_id, reason, delay)
            self._window_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # stop() cuts the wait short
                await asyncio.wait_for(self._window_changed.wait(), delay)

    async def _switch(self) -> None:
        """Go on in the partition the switcher chose: its pipeline (built and warmed up on the executor) replaces
        the current one; the next call's StreamStart declares it and its first frame is a key/intra frame."""
        assert self.switcher is not None and self._switch_to is not None
        chosen, self._switch_to = self._switch_to, None
        previous = self.switcher.plan
        loop = asyncio.get_running_loop()
        pipeline = await loop.run_in_executor(self._executor, self.switcher.build, chosen)
        pipeline.plan = chosen
        live = self.grabber.mode is CaptureMode.LIVE
        if pipeline.rate is not None:
            pipeline.rate.allow_drop = live
        self.link = LinkMonitor(pipeline.rate) if pipeline.rate is not None and live else None
        self.pipeline = pipeline
        self._coding += 1
        self.switcher.switched(previous, chosen)
        self.stats.partition_switches += 1

    def _switch_due(self) -> bool:
        """True when auto wants another partition and the next frame is not started yet (its head would be the
        old partition's)."""
        if self.switcher is None or self._carry is not None or self._job is not None:
            return False
        self._switch_to = self.switcher.due()
        return self._switch_to is not None

    async def _open(self, call: grpc.aio.StreamStreamCall) -> None:
        start = self.pipeline.start_message(self.config.stream_id)
        await call.write(inference_pb2.InferRequest(start=start))
        response = await asyncio.wait_for(call.read(), self.config.connect_timeout_s)
        if response is grpc.aio.EOF or response.WhichOneof("kind") != "accepted":
            raise _RetryableStreamError("the cloud did not accept the stream")
        asked = start.partition or inference_pb2.PARTITION_FEATURES
        if (response.accepted.partition or inference_pb2.PARTITION_FEATURES) != asked:
            raise StreamRejectedError(
                f"the cloud at {self.config.cloud} does not serve the {_partition_name(asked)} partition (it is older "
                "than partitions, or ignored the request): upgrade it, or use --partition features.")
        self.zones = drawable_zones(response.accepted.zones)
        self.pipeline.accepted(response.accepted)
        log.info("stream %s accepted by %s", self.config.stream_id, self.config.cloud)

    def _after_disconnect(self) -> None:
        """Coder state restarts with an intra frame; in live mode stale unanswered frames are dropped."""
        self.pipeline.restart_coding()
        self._coding += 1
        if self.grabber.mode is CaptureMode.LIVE and self._pending:
            self.stats.lost_on_reconnect += len(self._pending)
            self._pending.clear()
            self._window_changed.set()

    async def _stream(self, call: grpc.aio.StreamStreamCall) -> bool:
        """Resend what is unanswered, then send and receive until done; True when the stream finished."""
        loop = asyncio.get_running_loop()
        for frame_id, pending in list(self._pending.items()):
            frame = await loop.run_in_executor(self._executor, self.pipeline.encode, pending.head)
            if frame is None:
                del self._pending[frame_id]
                self.stats.dropped_by_rate += 1
                self._window_changed.set()
                continue
            await call.write(inference_pb2.InferRequest(frame=frame))
            self.stats.resent += 1
        sender = asyncio.create_task(self._send_loop(call), name="edge-send")
        receiver = asyncio.create_task(self._receive_loop(call), name="edge-receive")
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_EXCEPTION)
            if sender.done() and isinstance(sender.exception(), asyncio.InvalidStateError):
                # The call ended under the sender's feet; the receiver reads the status that says why.
                await asyncio.wait_for(receiver, self.config.connect_timeout_s)
            await receiver
            return await sender
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)

    # -- the two directions --------------------------------------------------------------------
    async def _wait_for_window(self) -> None:
        while len(self._pending) >= self.config.window and not self._stopping:
            self._window_changed.clear()
            await self._window_changed.wait()

    async def _next_frame(self) -> tuple[HeadOutput, inference_pb2.FeatureFrame | None] | None:
        """The next frame through preprocess, head and encode, in one executor job; survives cancellation without
        losing the frame (a frame coded before a reconnect restarted the coder is coded again)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._job is None:
                self._job = loop.run_in_executor(self._executor, self._prepare_frame, self._carry)
                self._job_coding = self._coding
            try:
                prepared = await asyncio.shield(self._job)
            except asyncio.CancelledError:
                # The stream ended under us: the job runs on, or has just finished. Keep it, so that the next call
                # takes its frame (clearing a finished job here lost that frame: one result short).
                raise
            except BaseException:
                self._job = None
                raise
            self._job = None
            if prepared is None or self._job_coding == self._coding:
                return prepared
            self._carry = prepared[0]

    def _prepare_frame(self, carry: HeadOutput | None
                       ) -> tuple[HeadOutput, inference_pb2.FeatureFrame | None] | None:
        """On the executor: grab a frame and run its head (unless one is carried over), then encode it."""
        head = carry
        if head is None:
            frame = self.grabber.get(0.2)
            if frame is None:
                return None
            head = self.pipeline.run_head(frame)
        return head, self.pipeline.encode(head)

    async def _send_loop(self, call: grpc.aio.StreamStreamCall) -> bool:
        while not self._stopping and self._source_ended is None:
            await self._wait_for_window()
            if self._stopping or self._enough_sent() or self._switch_due():
                break
            try:
                prepared = await self._next_frame()
            except EndOfSource as end:
                self._source_ended = end
                log.info("stream %s: %s", self.config.stream_id, end.reason)
                break
            if prepared is None:
                continue
            head, frame_message = prepared
            self._carry = None
            if frame_message is None:
                self.stats.dropped_by_rate += 1
                continue
            self._pending[head.frame_id] = _Pending(head, time.monotonic_ns(), frame_message.ByteSize())
            await call.write(inference_pb2.InferRequest(frame=frame_message))
            self.stats.sent += 1
            if self.switcher is not None:
                self.switcher.frame_sent()
        while self._pending:
            self._window_changed.clear()
            await self._window_changed.wait()
        await call.done_writing()
        return True

    def _enough_sent(self) -> bool:
        """True when the frames answered and awaiting answers make the --frames asked for."""
        wanted = self.config.max_results
        return wanted is not None and self.stats.results + len(self._pending) >= wanted

    async def _receive_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                if self._pending or (self._source_ended is None and not self._stopping and not self._enough_sent()
                                     and self._switch_to is None):
                    raise _RetryableStreamError("the cloud closed the stream")
                return
            if response.WhichOneof("kind") != "result":
                continue
            result = response.result
            pending = self._pending.pop(result.frame_id, None)
            if pending is None:
                continue  # a duplicate of a frame answered before a reconnect
            self._window_changed.set()
            self._account(result)
            if self.link is not None:
                cloud_seconds = sum(result.stage_seconds.get(stage, 0.0) for stage in CLOUD_STAGES)
                self.link.on_result(time.monotonic(), pending.sent_monotonic_ns / 1e9, pending.nbytes, cloud_seconds)
                rate = getattr(self.pipeline, "rate", None)
                if self.switcher is not None and rate is not None:  # the link's estimate of the uplink
                    self.switcher.set_budgets(uplink_kbps=rate.budget_bps / 1000)
            if self.switcher is not None and not result.HasField("error"):
                self.switcher.observe(result.payload_bytes)
            if result.HasField("error") and result.error.intra_frame_requested:
                self.pipeline.restart_coding()
            self.on_result(FrameOutcome(pending.head.frame, result, pending.sent_monotonic_ns, time.monotonic_ns(),
                                        self.zones))

    def _account(self, result: inference_pb2.InferenceResult) -> None:
        self.stats.results += 1
        if result.HasField("error"):
            self.stats.frame_errors += 1
        self.stats.payload_bytes += result.payload_bytes
        self.stats.elements += result.elements
        for stage, seconds in result.stage_seconds.items():
            self.stats.stage_seconds[stage] += seconds
