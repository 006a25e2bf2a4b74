"""`InferenceService` on grpc.aio: the `Infer` bidi stream and the `Subscribe` fan-out.

Per `Infer` call: the start message is checked (unknown model or cut: FAILED_PRECONDITION before any
frame), then a reader task moves frames into a bounded queue and the handler answers them one at a
time, in order, with the CPU work (decode, tail, NMS) on the executor (the time a frame waited in the
queue is reported as stage "queue"). A bad frame gets an in-band
error and the stream goes on; so does a frame whose result would exceed --max-message-bytes
(RESOURCE_EXHAUSTED in-band). Statuses that end a call:

    FAILED_PRECONDITION  the first message is a frame, not a StreamStart, or names an unknown model or cut, or
                         carries a codec profile made for another model, cut or tensors, or asks for a partition
                         this cloud cannot serve (pixels without PyAV, detections of a classification model)
    INVALID_ARGUMENT     a second StreamStart, an empty InferRequest (anywhere), a malformed stream id, codec
                         profile, partition or pixel coding
    RESOURCE_EXHAUSTED   the cloud already serves --max-streams streams, or --max-streams-per-peer from
                         the caller's address (or, from gRPC itself, a message above --max-message-bytes)
    DEADLINE_EXCEEDED    no frame that got a result without an error for --stream-idle-timeout seconds (the slot
                         is freed; empty keepalive frames do not hold it)
    UNAVAILABLE          the model is still loading, or the server is draining (reconnect elsewhere)
    ABORTED              a newer connection of the same identity resumed the same stream id
    UNAUTHENTICATED      no credential, one the access file does not know, or a revoked client certificate
    PERMISSION_DENIED    the identity may not publish / read this stream id, or another identity owns it

`Subscribe` and `SubscribeWithCredits` (as many results as the client granted) stream results (from the
in-memory hub, or from the results bus with --nats), and with SubscribeRequest.events the streams' track events
too, each with its position, from after the position the client names; it ends only with UNAVAILABLE: DRAINING
when the cloud
shuts down (after the results of the drained frames were sent), SUBSCRIPTION_MAX_AGE after
--max-connection-age seconds; clients resubscribe and resume (splitinfer.clients).

Each such status carries google.rpc details (grpcio-status): ErrorInfo with a reason (NO_STREAM_START,
UNKNOWN_MODEL_OR_CUT, PROFILE_MISMATCH, BAD_CODEC_PROFILE, BAD_PARTITION, BAD_PIXEL_CODING, PARTITION_UNAVAILABLE,
BAD_STREAM_ID, STREAM_PROTOCOL, EMPTY_REQUEST,
MAX_STREAMS, MAX_STREAMS_PER_PEER, IDENTITY_MAX_STREAMS, STREAM_IDLE, MODEL_LOADING, DRAINING, STREAM_TAKEN_OVER,
SUBSCRIPTION_MAX_AGE, BUS_UNAVAILABLE, MISSING_CREDENTIALS, INVALID_TOKEN, MALFORMED_TOKEN, UNKNOWN_CERTIFICATE,
REVOKED_CERTIFICATE, STREAM_NOT_PERMITTED, STREAM_OWNED_BY_OTHER) in domain "splitinfer.v1", and RetryInfo where
waiting and retrying helps.
What subscribers and the bus see is published in services/cloud/publishing.py (each frame once, tracked with
--tracking); choosing batches is services/cloud/batcher.py; rich error statuses are services/cloud/status.py.
Authentication happens before the handler runs, in services/cloud/authentication.py (a ServerInterceptor); the
handlers read the caller from there and check what it may publish or read (services/cloud/access.py) before
anything else of a call is read. When the access file is reloaded, an open call whose credentials it no longer accepts (a revoked certificate, a removed token) ends
with UNAUTHENTICATED at its next frame or result.

Per stream, memory is bounded: at most --stream-queue frames and --stream-queue-bytes bytes wait in
the queue (one frame is always let through), and results carry only server-defined data plus the
frame's fixed-size capture fields (see splitinfer.services.stages for the stage times).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, NoReturn

import grpc
from google.rpc import code_pb2

from splitinfer.codec import CodecError
from splitinfer.errors import BusError
from splitinfer.channel_options import DEFAULT_MAX_MESSAGE_BYTES
from splitinfer.services.cloud.access import ANONYMOUS, AccessPolicy, AuthenticationError, Identity
from splitinfer.services.cloud.authentication import Caller, current_caller
from splitinfer.services.cloud.batcher import FrameBatcher
from splitinfer.services.cloud.bus import ResultBus
from splitinfer.services.cloud.metadata import server_metadata
from splitinfer.services.cloud.metrics import CloudMetrics
from splitinfer.services.cloud.publishing import ResultPublisher
from splitinfer.services.cloud.tracking import zone_shapes
from splitinfer.services.cloud.status import abort
from splitinfer.services.cloud.streams import (
    Connection,
    IdentityStreamLimitError,
    StreamOwnedError,
    StreamRegistry,
    peer_address,
)
from splitinfer.services.cloud.subscribers import SubscriberHub, Subscription
from splitinfer.services.pixels import available as pixels_available
from splitinfer.services.pixels import check_pixel_coding
from splitinfer.services.profiles import ProfileMismatchError, check_stream_profile
from splitinfer.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger("splitinfer.cloud")

STREAM_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
_END = object()
# One status for one kind of mistake: an empty request is INVALID_ARGUMENT wherever it comes.
_EMPTY_REQUEST = "an InferRequest must hold a start (first) or a frame (after it); this one holds neither."
_IDLE = object()
_PARTITIONS = (inference_pb2.PARTITION_FEATURES, inference_pb2.PARTITION_PIXELS, inference_pb2.PARTITION_DETECTIONS)
# Room left in --max-message-bytes for the InferResponse wrapper around a result.
_RESPONSE_OVERHEAD_BYTES = 64


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Serves every stream with one shared engine (see splitinfer.services.cloud.engine.TailEngine)."""

    # > 0: a Subscribe call ends after this many seconds with UNAVAILABLE (SUBSCRIPTION_MAX_AGE) and the client
    # resumes, so that subscribers rebalance like edges do (set from --max-connection-age).
    subscription_max_age_s: float = 0.0
    # What GetServerMetadata reports as limits (set from the cloud's configuration).
    limits: inference_pb2.ServerLimits = inference_pb2.ServerLimits()

    def __init__(
        self,
        *,
        registry: StreamRegistry,
        hub: SubscriberHub | ResultBus,
        metrics: CloudMetrics,
        executor: Executor,
        stream_queue_size: int = 4,
        stream_queue_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        stream_idle_timeout_s: float = 0.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        access: Callable[[], AccessPolicy] = AccessPolicy,
        max_streams_per_identity: int | None = None,
        batcher: FrameBatcher | None = None,
    ) -> None:
        self.engine: Any = None  # set once the model is loaded
        self.access = access
        self.max_streams_per_identity = max_streams_per_identity
        self.registry = registry
        self.hub = hub
        self.metrics = metrics
        self.executor = executor
        self.stream_queue_size = stream_queue_size
        self.stream_queue_bytes = stream_queue_bytes
        self.stream_idle_timeout_s = stream_idle_timeout_s
        self.max_result_bytes = max_message_bytes - _RESPONSE_OVERHEAD_BYTES
        self.batcher = batcher or FrameBatcher(executor)  # max_batch 1: each frame alone on the executor
        self.publisher = ResultPublisher(hub, self._bound_result_size)  # its tracker is set from --tracking
        self.draining = False
        self._calls_idle = asyncio.Event()
        self._calls_idle.set()
        self._active_calls = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """Stop taking frames and streams; streams finish what they queued, then end with UNAVAILABLE."""
        self.draining = True
        self.registry.stop_all("the cloud is shutting down")

    def end_subscriptions(self) -> None:
        """End Subscribe calls once they have sent what is queued (after the drain answered every frame)."""
        self.hub.close("the cloud is shutting down")

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
        caller = current_caller()
        identity = caller.identity
        if self.draining:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "the cloud is shutting down; reconnect to another "
                        "replica.", "DRAINING", retry_after_s=1.0)
        if self.engine is None:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "the model is still loading; retry in a few seconds.",
                        "MODEL_LOADING", retry_after_s=2.0)
        start = await self._read_start(request_iterator, context)
        split = await self._check_start(start, identity, context)
        connection = await self._attach(start, split, identity, context)
        # From here on nothing may leak the slot: the finally below does the bookkeeping before its only await.
        self._enter_call()
        queue = _FrameQueue(self.stream_queue_size, self.stream_queue_bytes)
        reader = asyncio.create_task(self._read_frames(request_iterator, connection, queue),
                                     name=f"infer-reader:{start.stream_id}")
        log.info("stream %s opened (model %s, %s, cut %s, peer %s)", start.stream_id, start.model,
                 inference_pb2.Partition.Name(connection.state.partition), split.cut, connection.peer)
        try:
            features = connection.state.partition == inference_pb2.PARTITION_FEATURES
            tracker = self.publisher.tracker
            yield inference_pb2.InferResponse(accepted=inference_pb2.StreamAccepted(
                stream_id=start.stream_id, tensor_names=[spec.name for spec in split.tensors] if features else [],
                partition=connection.state.partition, derives_uniform_quantizers=features,
                zones=zone_shapes(tracker.zones_of(start.stream_id)) if tracker is not None else []))
            last_frame_id = -1
            while True:
                item = await self._next_item(queue, connection, self.stream_idle_timeout_s)
                if item is _END:
                    break
                if item is _IDLE:
                    self.metrics.idle_streams.inc()
                    await abort(context, grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"no frame the cloud could serve arrived for {self.stream_idle_timeout_s:g} s "
                                "(--stream-idle-timeout; frames answered with an error, such as empty keepalive "
                                "frames, do not count): the stream was ended to free its slot; reconnect with the "
                                "same stream id to resume.",
                                "STREAM_IDLE")
                if isinstance(item, _StreamProtocolError):
                    await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(item), item.reason)
                if isinstance(item, BaseException):
                    raise item
                await self._end_if_no_longer_authenticated(caller, context)
                frame, arrived = item
                waited = time.perf_counter() - arrived
                result = await self.batcher.process(self.engine, connection.state, split, frame, last_frame_id)
                last_frame_id = max(last_frame_id, frame.frame_id)
                self.finish_result(frame, result, waited)
                if not result.HasField("error"):
                    connection.last_served_at = time.monotonic()
                del frame, item  # the frame's bytes are not held while the result is sent
                await self.publisher.publish(connection.state, result)
                yield inference_pb2.InferResponse(result=result)
            if connection.stopped.is_set():
                message = f"{connection.stop_reason}; reconnect with the same stream id to resume."
                if self.draining:
                    await abort(context, grpc.StatusCode.UNAVAILABLE, message, "DRAINING", retry_after_s=1.0)
                await abort(context, grpc.StatusCode.ABORTED, message, "STREAM_TAKEN_OVER")
        finally:
            # The bookkeeping comes first and without an await: a second cancellation of this call (gRPC cancels
            # the handler when the client goes away, possibly while it is already cleaning up) would otherwise
            # skip it and leak the stream's slot for good.
            self.registry.detach(connection)
            self._leave_call()
            reader.cancel()
            log.info("stream %s closed", start.stream_id)
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_start(self, request_iterator: AsyncIterator, context: grpc.aio.ServicerContext
                          ) -> inference_pb2.StreamStart:
        try:
            # A call that never says what it is holds a handler: it gets the idle timeout too.
            first = await asyncio.wait_for(anext(aiter(request_iterator)), self.stream_idle_timeout_s or None)
        except StopAsyncIteration:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, "the stream ended before its StreamStart "
                        "message.", "NO_STREAM_START")
        except asyncio.TimeoutError:
            self.metrics.idle_streams.inc()
            await abort(context, grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no StreamStart arrived within {self.stream_idle_timeout_s:g} s (--stream-idle-timeout).",
                        "STREAM_IDLE")
        if first.WhichOneof("kind") is None:
            self.metrics.rejected_streams.labels("empty_request").inc()
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, _EMPTY_REQUEST, "EMPTY_REQUEST")
        if first.WhichOneof("kind") != "start":
            self.metrics.rejected_streams.labels("no_start").inc()
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        "the first message of an Infer stream must be a StreamStart (stream id, model, cut).",
                        "NO_STREAM_START")
        return first.start

    async def _end_if_no_longer_authenticated(self, caller: Caller, context: grpc.aio.ServicerContext) -> None:
        """End an open call with UNAUTHENTICATED once a reloaded access file refuses its credentials (revoked)."""
        try:
            caller.still_accepted(self.access())
        except AuthenticationError as exc:
            self.metrics.rejected_streams.labels("unauthenticated").inc()
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, f"{exc} (the cloud's access file changed while "
                        "this call was open)", exc.reason)

    async def _check_start(self, start: inference_pb2.StreamStart, identity: Identity,
                           context: grpc.aio.ServicerContext) -> Any:
        if not STREAM_ID_PATTERN.fullmatch(start.stream_id):
            self.metrics.rejected_streams.labels("bad_stream_id").inc()
            await _abort_bad_stream_id(context, start.stream_id)
        if not identity.may_publish(start.stream_id):
            self.metrics.rejected_streams.labels("permission_denied").inc()
            await abort(context, grpc.StatusCode.PERMISSION_DENIED,
                        f"identity {identity.name!r} may not publish stream {start.stream_id!r}; use a stream id its "
                        "publish patterns allow, or extend them in the cloud's access file.", "STREAM_NOT_PERMITTED")
        await self._refuse_if_full(start.stream_id, peer_address(context.peer() or ""), context)
        partition = start.partition or inference_pb2.PARTITION_FEATURES
        if partition not in _PARTITIONS:
            self.metrics.rejected_streams.labels("bad_partition").inc()
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"StreamStart.partition {start.partition} is not a partition this cloud knows (features, "
                        "pixels, detections); upgrade the cloud or choose one of those.", "BAD_PARTITION")
        if partition != inference_pb2.PARTITION_FEATURES:
            return await self._check_whole_model_start(start, partition, context)
        loop = asyncio.get_running_loop()
        try:
            split = await loop.run_in_executor(self.executor, self.engine.open_stream, start.model, start.cut)
        except LookupError as exc:
            self.metrics.rejected_streams.labels("unknown_model_or_cut").inc()
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc.args[0] if exc.args else exc),
                        "UNKNOWN_MODEL_OR_CUT")
        try:
            check_stream_profile(start.codec_profile, start.model, split.cut, [t.name for t in split.tensors])
        except ProfileMismatchError as exc:
            self.metrics.rejected_streams.labels("profile_mismatch").inc()
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "PROFILE_MISMATCH")
        except CodecError as exc:
            self.metrics.rejected_streams.labels("bad_codec_profile").inc()
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"StreamStart.codec_profile is not a valid codec profile: {str(exc)[:400]}",
                        "BAD_CODEC_PROFILE")
        return split

    async def _check_whole_model_start(self, start: inference_pb2.StreamStart,
                                       partition: inference_pb2.Partition, context: grpc.aio.ServicerContext) -> Any:
        """A pixels or detections stream: the model, the partition's support and (pixels) the video coding."""
        if partition == inference_pb2.PARTITION_PIXELS:
            problem = check_pixel_coding(start.pixel_coding)
            if problem is not None:
                self.metrics.rejected_streams.labels("bad_pixel_coding").inc()
                await abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"StreamStart.pixel_coding: {problem}",
                            "BAD_PIXEL_CODING")
            if not pixels_available():
                self.metrics.rejected_streams.labels("partition_unavailable").inc()
                await abort(context, grpc.StatusCode.FAILED_PRECONDITION, "this cloud cannot decode pixels: its "
                            "operator must install PyAV (pip install 'splitinfer[pixels]'); send features instead.",
                            "PARTITION_UNAVAILABLE")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, self.engine.open_partition, start.model, partition)
        except LookupError as exc:
            self.metrics.rejected_streams.labels("unknown_model_or_cut").inc()
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc.args[0] if exc.args else exc),
                        "UNKNOWN_MODEL_OR_CUT")
        except ValueError as exc:
            self.metrics.rejected_streams.labels("partition_unavailable").inc()
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "PARTITION_UNAVAILABLE")

    async def _refuse_if_full(self, stream_id: str, peer: str, context: grpc.aio.ServicerContext) -> None:
        """End the call with RESOURCE_EXHAUSTED (and RetryInfo) if the stream would exceed a stream cap."""
        reason = self.registry.refusal(stream_id, peer)
        if reason is None:
            return
        self.metrics.rejected_streams.labels(reason).inc()
        if reason == "max_streams":
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"this cloud serves at most {self.registry.max_streams} streams at once; "
                        "retry later or raise --max-streams.", "MAX_STREAMS", retry_after_s=5.0)
        await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"this cloud serves at most {self.registry.max_streams_per_peer} streams from one address "
                    f"({peer[:64]}); close one, retry later or raise --max-streams-per-peer.",
                    "MAX_STREAMS_PER_PEER", retry_after_s=5.0)

    async def _attach(self, start: inference_pb2.StreamStart, split: Any, identity: Identity,
                      context: grpc.aio.ServicerContext) -> Connection:
        """Check the stream caps again (the model lookup awaited) and attach, with no await in between."""
        peer = peer_address(context.peer() or "")
        if self.registry.refusal(start.stream_id, peer) is not None:
            await self._refuse_if_full(start.stream_id, peer, context)
        # The cloud-wide cap is for authenticated identities: an open cloud's callers all share one identity.
        shared_cap = None if identity is ANONYMOUS else self.max_streams_per_identity
        limits = [limit for limit in (identity.max_streams, shared_cap) if limit is not None]
        try:
            partition = start.partition or inference_pb2.PARTITION_FEATURES
            coding = start.pixel_coding if partition == inference_pb2.PARTITION_PIXELS else None
            return self.registry.attach(start.stream_id, start.model, split.cut, peer, owner=identity.name,
                                        owner_limit=min(limits) if limits else None, partition=partition,
                                        pixel_coding=coding)
        except StreamOwnedError:
            self.metrics.rejected_streams.labels("permission_denied").inc()
            await abort(context, grpc.StatusCode.PERMISSION_DENIED,
                        f"stream {start.stream_id!r} belongs to another identity; pick another stream id.",
                        "STREAM_OWNED_BY_OTHER")
        except IdentityStreamLimitError:
            self.metrics.rejected_streams.labels("identity_max_streams").inc()
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"identity {identity.name!r} already has {min(limits)} streams open, its limit; close one "
                        "or raise max_streams / --max-streams-per-identity.", "IDENTITY_MAX_STREAMS",
                        retry_after_s=5.0)

    async def _read_frames(self, request_iterator: AsyncIterator, connection: Connection, queue: _FrameQueue) -> None:
        try:
            async for request in request_iterator:
                if connection.stopped.is_set():
                    return
                kind = request.WhichOneof("kind")
                if kind == "frame":
                    await queue.put_frame(request.frame, request.ByteSize())
                else:
                    await queue.put(_StreamProtocolError(
                        "a stream has exactly one StreamStart, as its first message; open a new call to change "
                        "model or cut.", "STREAM_PROTOCOL") if kind == "start" else
                        _StreamProtocolError(_EMPTY_REQUEST, "EMPTY_REQUEST"))
                    return
            await queue.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the handler decides what a broken stream means
            await queue.put(exc)

    @staticmethod
    async def _next_item(queue: _FrameQueue, connection: Connection, idle_timeout_s: float) -> Any:
        """The next queued item; _END once the queue is empty and the connection was told to stop; _IDLE once
        the stream got no result without an error for idle_timeout_s seconds (0: never), queued frames or not."""
        while True:
            timeout = None
            if idle_timeout_s > 0:
                timeout = connection.last_served_at + idle_timeout_s - time.monotonic()
                if timeout <= 0:
                    return _IDLE
            if not queue.empty():
                return queue.get_nowait()
            if connection.stopped.is_set():
                return _END
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(connection.stopped.wait())
            try:
                await asyncio.wait({getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                return queue.taken(getter.result())

    def finish_result(self, frame: inference_pb2.FeatureFrame, result: inference_pb2.InferenceResult,
                      waited: float) -> None:
        """The servicer's own part of answering a frame (after TailEngine.process): queue time, counting the
        stage entries it ignored, the size bound and the metrics. Synchronous, so the fuzz harness runs it too."""
        result.stage_seconds["queue"] = waited
        self.metrics.count_ignored_stages(frame, result)
        self._bound_result_size(result)
        self.metrics.record_result(result)

    def _bound_result_size(self, result: inference_pb2.InferenceResult) -> None:
        """Replace a result too large to send by an in-band error, so that the stream goes on."""
        size = result.ByteSize()
        if size <= self.max_result_bytes:
            return
        self.metrics.oversized_results.inc()
        for name in ("detections", "classes", "stage_seconds"):
            result.ClearField(name)
        result.error.code = code_pb2.RESOURCE_EXHAUSTED
        result.error.reason = inference_pb2.FRAME_ERROR_REASON_RESULT_TOO_LARGE
        result.error.message = (f"the result of this frame would be {size} bytes, above --max-message-bytes "
                                f"({self.max_result_bytes + _RESPONSE_OVERHEAD_BYTES}); the stream goes on.")
        result.error.intra_frame_requested = False

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
        async def first_request() -> tuple[inference_pb2.SubscribeRequest, int | None]:
            return request, None  # no credits: as many results as gRPC accepts

        async for response in self._subscription(first_request, None, context):
            yield response

    async def SubscribeWithCredits(
        self, request_iterator: AsyncIterator[inference_pb2.SubscribeWithCreditsRequest],
        context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.SubscribeWithCreditsResponse]:
        async def first_request() -> tuple[inference_pb2.SubscribeRequest, int | None]:
            try:
                # A call that never says what it wants holds a handler: it gets the idle timeout, as Infer does.
                # (Not read before authentication: grpc makes the reader only when it is first used.)
                first = await asyncio.wait_for(anext(request_iterator), self.stream_idle_timeout_s or None)
            except StopAsyncIteration:
                first = inference_pb2.SubscribeWithCreditsRequest()  # all streams, and never a credit
            except asyncio.TimeoutError:
                await abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "no SubscribeWithCreditsRequest arrived "
                            f"within {self.stream_idle_timeout_s:g} s (--stream-idle-timeout).", "STREAM_IDLE")
            return first.subscription, first.credits

        async for response in self._subscription(first_request, request_iterator, context):
            yield inference_pb2.SubscribeWithCreditsResponse(item=response)

    async def _subscription(self, first_request: Callable[[], Any], later_requests: AsyncIterator | None,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[inference_pb2.SubscribeResponse]:
        """Both Subscribe forms for the authenticated caller: check the request, then serve. `first_request` gives
        the subscription and, with credits, the first grant; `later_requests` grant more."""
        caller = current_caller()
        identity = caller.identity
        request, credits = await first_request()
        stream_ids = await self._subscribed_stream_ids(request, context)
        for stream_id in stream_ids:
            if not identity.may_subscribe(stream_id):
                await abort(context, grpc.StatusCode.PERMISSION_DENIED,
                            f"identity {identity.name!r} may not read stream {stream_id!r}; ask for streams its "
                            "subscribe patterns allow, or extend them in the cloud's access file.",
                            "STREAM_NOT_PERMITTED")
        granting = None
        try:
            # An empty list means every stream this identity may read.
            async with self.hub.subscribe(stream_ids, request.after_sequence, permits=identity.may_subscribe,
                                          events=request.events) as subscription:
                if credits is not None and later_requests is not None:
                    subscription.grant(credits)
                    granting = asyncio.create_task(_read_credits(later_requests, subscription),
                                                   name="subscriber-credits")
                async for response in self._serve_subscription(subscription, context):
                    await self._end_if_no_longer_authenticated(caller, context)
                    yield response
        except BusError as exc:
            await abort(context, grpc.StatusCode.UNAVAILABLE, f"{exc}; subscribe again in a moment.",
                        "BUS_UNAVAILABLE", retry_after_s=2.0)
        finally:
            if granting is not None:
                granting.cancel()
                await asyncio.gather(granting, return_exceptions=True)
        await self._end_subscription(subscription, context)

    async def _serve_subscription(self, subscription: Subscription, context: grpc.aio.ServicerContext
                                  ) -> AsyncIterator[inference_pb2.SubscribeResponse]:
        """The subscription's results, until it is closed (shutdown) or reaches its maximum age."""
        self.metrics.subscribers.set(len(self.hub))
        # Headers now tell the client it is registered (ResultSubscriber.wait_subscribed), and the max lag that its
        # own buffer should respect too (a result that waited longer in total is stale).
        await context.send_initial_metadata((("splitinfer-subscribed", "1"),
                                             ("splitinfer-max-lag", f"{subscription.max_lag_s:g}")))
        deadline = time.monotonic() + self.subscription_max_age_s if self.subscription_max_age_s > 0 else None
        try:
            while True:
                try:
                    # Taken only when it can be written (grpc.aio awaits each write): the max-lag check is fresh.
                    response = await asyncio.wait_for(subscription.next(),
                                                      None if deadline is None else deadline - time.monotonic())
                except asyncio.TimeoutError:
                    return
                if response is None:
                    return
                yield response
        finally:
            self.metrics.subscribers.set(len(self.hub) - 1)

    async def _end_subscription(self, subscription: Subscription, context: grpc.aio.ServicerContext) -> NoReturn:
        """End the call with UNAVAILABLE saying why (maximum age or shutdown): the client resumes, never a silent OK."""
        if not subscription.closed:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "this subscription reached the cloud's maximum age "
                        f"({self.subscription_max_age_s:g} s, for load balancing); subscribe again with "
                        "after_sequence set to the last sequence received.", "SUBSCRIPTION_MAX_AGE",
                        retry_after_s=0.0)
        reason = subscription.close_reason or "the cloud is shutting down"
        await abort(context, grpc.StatusCode.UNAVAILABLE, f"{reason}; subscribe again (to any replica when the cloud "
                    "has a results bus) with after_sequence set to the last sequence received.", "DRAINING",
                    retry_after_s=1.0)

    async def _subscribed_stream_ids(self, request: inference_pb2.SubscribeRequest,
                                     context: grpc.aio.ServicerContext) -> list[str]:
        """The stream ids a Subscribe call asks for, checked (empty: every stream); the one place that filters."""
        for stream_id in request.stream_ids:
            if not STREAM_ID_PATTERN.fullmatch(stream_id):
                await _abort_bad_stream_id(context, stream_id)
        return list(request.stream_ids)

    # -- GetServerMetadata ---------------------------------------------------------------------
    async def GetServerMetadata(
        self, request: inference_pb2.GetServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.GetServerMetadataResponse:
        if self.engine is None:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "the model is still loading; retry in a few seconds.",
                        "MODEL_LOADING", retry_after_s=2.0)
        loop = asyncio.get_running_loop()
        try:
            split = await loop.run_in_executor(self.executor, self.engine.open_stream,
                                               request.model or self.engine.model_name, request.cut)
        except LookupError as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc.args[0] if exc.args else exc),
                        "UNKNOWN_MODEL_OR_CUT")
        return server_metadata(self.engine, split, self.limits)


async def _abort_bad_stream_id(context: grpc.aio.ServicerContext, stream_id: str) -> NoReturn:
    await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                f"stream id {stream_id[:64]!r} is invalid: use 1-128 characters from letters, digits and ._:@/- "
                "starting with a letter or digit.", "BAD_STREAM_ID")


async def _read_credits(requests: AsyncIterator[inference_pb2.SubscribeWithCreditsRequest],
                        subscription: Subscription) -> None:
    """Grant each later SubscribeWithCredits message's credits (a subscription in them is ignored)."""
    async for request in requests:
        subscription.grant(request.credits)


class _FrameQueue:
    """A stream's queue of (frame, arrival time), bounded in frames and in bytes (one frame always fits)."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=max_frames)
        self._max_bytes = max_bytes
        self._bytes = 0
        self._freed = asyncio.Event()

    def empty(self) -> bool:
        return self._queue.empty()

    async def put_frame(self, frame: inference_pb2.FeatureFrame, size: int) -> None:
        """Queue a frame; waits (so gRPC flow control pushes back on the client) while the bound is reached."""
        while self._bytes and self._bytes + size > self._max_bytes:
            self._freed.clear()
            await self._freed.wait()
        self._bytes += size
        await self._queue.put((frame, time.perf_counter(), size))

    async def put(self, item: object) -> None:
        """Queue a control item (_END, an error)."""
        await self._queue.put(item)

    async def get(self) -> Any:
        return await self._queue.get()

    def get_nowait(self) -> Any:
        return self.taken(self._queue.get_nowait())

    def taken(self, item: Any) -> Any:
        """Account for an item taken off the queue: a frame becomes (frame, arrival time) and frees its bytes."""
        if isinstance(item, tuple):
            frame, arrived, size = item
            self._bytes -= size
            self._freed.set()
            return frame, arrived
        return item


class _StreamProtocolError(Exception):
    """The client broke the stream protocol (a second start message, an empty request); `reason` for ErrorInfo."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
