"""`InferenceService` on grpc.aio: the `Infer` bidi stream and the `Subscribe` fan-out.

Per `Infer` call: the start message is checked (unknown model or cut: FAILED_PRECONDITION before any
frame), then a reader task moves frames into a bounded queue and the handler answers them one at a
time, in order, with the CPU work (decode, tail, NMS) on the executor (the time a frame waited in the
queue is reported as stage "queue"). A bad frame gets an in-band
error and the stream goes on. Statuses that end a call:

    FAILED_PRECONDITION  the first message is not a StreamStart, or names an unknown model or cut
    INVALID_ARGUMENT     a second StreamStart, or a malformed stream id
    RESOURCE_EXHAUSTED   the cloud already serves --max-streams streams (or, from gRPC itself, a
                         message above --max-message-bytes)
    UNAVAILABLE          the model is still loading, or the server is draining (reconnect elsewhere)
    ABORTED              a newer connection resumed the same stream id

Each such status carries google.rpc details (grpcio-status): ErrorInfo with a reason (NO_STREAM_START,
UNKNOWN_MODEL_OR_CUT, BAD_STREAM_ID, STREAM_PROTOCOL, MAX_STREAMS, MODEL_LOADING, DRAINING,
STREAM_TAKEN_OVER) in domain "splitinfer.v1", and RetryInfo where waiting and retrying helps.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from splitinfer.services.cloud.batcher import FrameBatcher
from splitinfer.services.cloud.metrics import CloudMetrics
from splitinfer.services.cloud.streams import Connection, StreamRegistry
from splitinfer.services.cloud.subscribers import SubscriberHub
from splitinfer.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger("splitinfer.cloud")

ERROR_DOMAIN = "splitinfer.v1"
STREAM_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
_END = object()


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Serves every stream with one shared engine (see splitinfer.services.cloud.engine.TailEngine)."""

    def __init__(
        self,
        *,
        registry: StreamRegistry,
        hub: SubscriberHub,
        metrics: CloudMetrics,
        executor: Executor,
        stream_queue_size: int = 4,
        batcher: FrameBatcher | None = None,
    ) -> None:
        self.engine: Any = None  # set once the model is loaded
        self.registry = registry
        self.hub = hub
        self.metrics = metrics
        self.executor = executor
        self.stream_queue_size = stream_queue_size
        self.batcher = batcher or FrameBatcher(executor)  # max_batch 1: each frame alone on the executor
        self.draining = False
        self._calls_idle = asyncio.Event()
        self._calls_idle.set()
        self._active_calls = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """Stop taking frames and streams; streams finish what they queued, then end with UNAVAILABLE."""
        self.draining = True
        self.registry.stop_all("the cloud is shutting down")
        self.hub.close()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no Infer call is open; False if some still were after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._calls_idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    # -- Infer ---------------------------------------------------------------------------------
    async def Infer(
        self, request_iterator: AsyncIterator[inference_pb2.InferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.InferResponse]:
        if self.draining:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "the cloud is shutting down; reconnect to another "
                         "replica.", "DRAINING", retry_after_s=1.0)
        if self.engine is None:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "the model is still loading; retry in a few seconds.",
                         "MODEL_LOADING", retry_after_s=2.0)
        start = await self._read_start(request_iterator, context)
        split = await self._check_start(start, context)
        connection = self.registry.attach(start.stream_id, start.model, split.cut)
        self._enter_call()
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.stream_queue_size)
        reader = asyncio.create_task(self._read_frames(request_iterator, connection, queue),
                                     name=f"infer-reader:{start.stream_id}")
        log.info("stream %s opened (model %s, cut %s)", start.stream_id, start.model, split.cut)
        try:
            yield inference_pb2.InferResponse(accepted=inference_pb2.StreamAccepted(
                stream_id=start.stream_id, tensor_names=[spec.name for spec in split.tensors]))
            last_frame_id = -1
            while True:
                item = await self._next_item(queue, connection)
                if item is _END:
                    break
                if isinstance(item, _StreamProtocolError):
                    await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(item), "STREAM_PROTOCOL")
                if isinstance(item, BaseException):
                    raise item
                frame, arrived = item
                waited = time.perf_counter() - arrived
                result = await self.batcher.process(self.engine, connection.state, split, frame, last_frame_id)
                result.stage_seconds["queue"] = waited
                last_frame_id = max(last_frame_id, frame.frame_id)
                self._record(result)
                if connection.state.first_publication(result.frame_id, result.capture.capture_time.ToNanoseconds()):
                    self.hub.publish(result)
                yield inference_pb2.InferResponse(result=result)
            if connection.stopped.is_set():
                message = f"{connection.stop_reason}; reconnect with the same stream id to resume."
                if self.draining:
                    await _abort(context, grpc.StatusCode.UNAVAILABLE, message, "DRAINING", retry_after_s=1.0)
                await _abort(context, grpc.StatusCode.ABORTED, message, "STREAM_TAKEN_OVER")
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self.registry.detach(connection)
            self._leave_call()
            log.info("stream %s closed", start.stream_id)

    async def _read_start(self, request_iterator: AsyncIterator, context: grpc.aio.ServicerContext
                          ) -> inference_pb2.StreamStart:
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "the stream ended before its StreamStart "
                         "message.", "NO_STREAM_START")
        if first.WhichOneof("kind") != "start":
            self.metrics.rejected_streams.labels("no_start").inc()
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                         "the first message of an Infer stream must be a StreamStart (stream id, model, cut).",
                         "NO_STREAM_START")
        return first.start

    async def _check_start(self, start: inference_pb2.StreamStart, context: grpc.aio.ServicerContext) -> Any:
        if not STREAM_ID_PATTERN.fullmatch(start.stream_id):
            self.metrics.rejected_streams.labels("bad_stream_id").inc()
            await _abort_bad_stream_id(context, start.stream_id)
        if self.registry.is_full(start.stream_id):
            self.metrics.rejected_streams.labels("max_streams").inc()
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"this cloud serves at most {self.registry.max_streams} streams at once; "
                         "retry later or raise --max-streams.", "MAX_STREAMS", retry_after_s=5.0)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, self.engine.open_stream, start.model, start.cut)
        except LookupError as exc:
            self.metrics.rejected_streams.labels("unknown_model_or_cut").inc()
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc.args[0] if exc.args else exc),
                         "UNKNOWN_MODEL_OR_CUT")

    async def _read_frames(self, request_iterator: AsyncIterator, connection: Connection, queue: asyncio.Queue) -> None:
        try:
            async for request in request_iterator:
                if connection.stopped.is_set():
                    return
                kind = request.WhichOneof("kind")
                if kind == "frame":
                    await queue.put((request.frame, time.perf_counter()))
                else:
                    await queue.put(_StreamProtocolError(
                        "a stream has exactly one StreamStart, as its first message; open a new call to change "
                        "model or cut." if kind == "start" else "an InferRequest must hold a start or a frame."))
                    return
            await queue.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the handler decides what a broken stream means
            await queue.put(exc)

    @staticmethod
    async def _next_item(queue: asyncio.Queue, connection: Connection) -> Any:
        """The next queued frame; _END once the queue is empty and the connection was told to stop."""
        while True:
            if not queue.empty():
                return queue.get_nowait()
            if connection.stopped.is_set():
                return _END
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(connection.stopped.wait())
            try:
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                return getter.result()

    def _record(self, result: inference_pb2.InferenceResult) -> None:
        model = result.model
        outcome = grpc.StatusCode.OK.name if not result.HasField("error") else _code_name(result.error.code)
        self.metrics.frames.labels(model, outcome).inc()
        self.metrics.payload_bytes.labels(model).inc(result.payload_bytes)
        self.metrics.elements.labels(model).inc(result.elements)
        if result.elements and not result.HasField("error"):
            self.metrics.bits_per_element.labels(model).observe(8 * result.payload_bytes / result.elements)
        for stage, seconds in result.stage_seconds.items():
            self.metrics.stage_seconds.labels(stage).observe(seconds)

    def _enter_call(self) -> None:
        self._active_calls += 1
        self._calls_idle.clear()
        self.metrics.open_streams.set(self.registry.open_streams)

    def _leave_call(self) -> None:
        self._active_calls -= 1
        self.metrics.open_streams.set(self.registry.open_streams)
        if self._active_calls == 0:
            self._calls_idle.set()

    # -- Subscribe -----------------------------------------------------------------------------
    async def Subscribe(
        self, request: inference_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.SubscribeResponse]:
        for stream_id in request.stream_ids:
            if not STREAM_ID_PATTERN.fullmatch(stream_id):
                await _abort_bad_stream_id(context, stream_id)
        with self.hub.subscribe(request.stream_ids) as subscription:
            self.metrics.subscribers.set(len(self.hub))
            # Headers now tell the client it is registered (ResultSubscriber.wait_subscribed).
            await context.send_initial_metadata(())
            try:
                while True:
                    item = await subscription.next()
                    if item is None:
                        return
                    result, dropped = item
                    yield inference_pb2.SubscribeResponse(result=result, dropped=dropped)
            finally:
                self.metrics.subscribers.set(len(self.hub) - 1)


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, reason: str,
                 *, retry_after_s: float | None = None) -> NoReturn:
    """End the call with a rich status: google.rpc ErrorInfo(reason, domain) and, if retrying helps, RetryInfo."""
    details = [any_pb2.Any()]
    details[0].Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    if retry_after_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(retry_after_s * 1e9))
        details.append(any_pb2.Any())
        details[-1].Pack(retry)
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=details))
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


async def _abort_bad_stream_id(context: grpc.aio.ServicerContext, stream_id: str) -> NoReturn:
    await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                 f"stream id {stream_id[:64]!r} is invalid: use 1-128 characters from letters, digits and ._:@/- "
                 "starting with a letter or digit.", "BAD_STREAM_ID")


class _StreamProtocolError(Exception):
    """The client broke the stream protocol (a second start message)."""


def _code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)
