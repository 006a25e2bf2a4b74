"""Subscribing to a cloud's results from other services: async and blocking forms that survive reconnects.

Both forms resume by themselves: when the call fails with UNAVAILABLE (a cloud shutting down says so with
RetryInfo; GOAWAY, max connection age and a lost connection look the same) they subscribe again after
the last position received, with exponential backoff and jitter, to the same address (behind a Service, any
replica; with a results bus every replica serves every stream). They give up only after `give_up_after`
seconds without a subscription, counted from the disconnect (never from the last result: a quiet stream
resumes across any number of restarts, within the bus's retention). Any other status (a bad stream id, no
permission) is final and raised.

Both use SubscribeWithCredits (flow control the client drives): the cloud sends only as many results as the
client granted, so a slow consumer's backlog waits in the cloud, where results older than the cloud's
--subscriber-max-lag are dropped and counted, instead of in gRPC's transport buffers, where it would only grow
older. The async form keeps `window` results granted ahead in a local queue bounded in results, bytes and
lag; the blocking form grants one result each time the caller asks for the next. A cloud older than credits
is served with Subscribe (no lag bound beyond its own queue).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import random
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitinfer.channel_options import DEFAULT_MAX_MESSAGE_BYTES, channel_options
from splitinfer.channel_security import ChannelSecurity, connection_hint, is_tls_failure
from splitinfer.errors import CloudUnavailableError, ConfigError, ServiceError
from splitinfer.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger("splitinfer.clients")

SERVICE_NAME = "splitinfer.v1.InferenceService"
# Response header of a Subscribe call that the cloud has registered (its subscription is live).
SUBSCRIBED_HEADER = "splitinfer-subscribed"
# Response header: the cloud's --subscriber-max-lag, seconds (0: none); a client's own buffer respects it too.
MAX_LAG_HEADER = "splitinfer-max-lag"
# Statuses after which subscribing again may work (the cloud restarts, drains or closed the connection).
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL})


@dataclass(frozen=True)
class SubscribedResult:
    """A result and how many results this subscriber lost just before it (it read too slowly).

    With `events=True`, an item may be a track event instead (docs/TRACKS.md): then `event` is set and `result` is
    empty."""

    result: inference_pb2.InferenceResult
    dropped: int
    # The result's position: pass it as `after_sequence` to resume after it.
    sequence: int = 0
    event: inference_pb2.TrackEvent | None = None


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: `initial` doubling up to `maximum`, with full jitter; give up `give_up_after` s after the
    disconnect (or the start) if no subscription succeeded since."""

    initial: float = 0.2
    maximum: float = 5.0
    give_up_after: float = 120.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.5, 1.0) * min(self.maximum, self.initial * 2**attempt)


def open_channel(cloud: str, security: ChannelSecurity,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.aio.Channel:
    """The async channel every client call uses (the one place that applies transport security)."""
    return security.aio_channel(cloud, channel_options(max_message_bytes))


def open_blocking_channel(cloud: str, security: ChannelSecurity,
                          max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.Channel:
    """The blocking channel of `subscribe` and `check_health` (the one place that applies transport security)."""
    return security.channel(cloud, channel_options(max_message_bytes))


def _retryable(exc: grpc.RpcError) -> bool:
    """True if subscribing again may help (the one place that decides): not after a failed TLS handshake."""
    return exc.code() in RETRYABLE and not is_tls_failure(exc.details())


def _wrap(exc: grpc.RpcError, cloud: str, security: ChannelSecurity) -> ServiceError:
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        hint = connection_hint(exc.details(), security)
        return CloudUnavailableError(f"the cloud at {cloud} is unavailable ({code.name}: {exc.details()}); {hint}.")
    return ServiceError(f"subscription to {cloud} failed ({code.name}: {exc.details()}).")


class ResultSubscriber:
    """Async iterator over a cloud's results, filtered by stream id (empty: every stream); reconnects and resumes.

        async with ResultSubscriber("localhost:50051", ["cam-1"]) as results:
            async for item in results:
                print(item.result.frame_id, len(item.result.detections), item.dropped)

    At most `window` results are granted ahead (read from the cloud before the caller takes them). The local
    queue keeps at most `max_queue` results and `max_queue_bytes` bytes, and no result that waited longer in
    all (in the cloud and here) than `max_lag_s` or the cloud's --subscriber-max-lag, whichever is smaller
    (None: the cloud's); what it drops is counted in the next result's `dropped`. `reconnect=False` ends at
    the first failure instead (raising CloudUnavailableError or ServiceError).
    """

    def __init__(self, cloud: str, stream_ids: Iterable[str] = (), *, after_sequence: int = 0,
                 reconnect: bool = True, backoff: Backoff = Backoff(), max_queue: int = 256,
                 max_queue_bytes: int = 16 * 1024 * 1024, max_lag_s: float | None = None,
                 security: ChannelSecurity = ChannelSecurity(),
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, window: int = 16, events: bool = False) -> None:
        if max_queue < 1 or max_queue_bytes < 1 or window < 1:
            raise ServiceError(f"max_queue, max_queue_bytes and window must be at least 1, got {max_queue}, "
                               f"{max_queue_bytes}, {window}.")
        self.cloud = cloud
        self.stream_ids = list(stream_ids)
        self.events = events  # also the streams' track events (SubscribedResult.event)
        self.last_sequence = after_sequence
        self.reconnect = reconnect
        self.backoff = backoff
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.max_lag_s = max_lag_s
        self.window = window
        self.max_message_bytes = max_message_bytes
        self.security = security
        self.reconnects = 0
        self.dropped_total = 0
        # (response, its size, when it arrived)
        self._queue: collections.deque[tuple[inference_pb2.SubscribeResponse, int, float]] = collections.deque()
        self._cloud_max_lag_s: float | None = None  # from the cloud's MAX_LAG_HEADER
        self._credits = True  # False once a cloud without SubscribeWithCredits answered UNIMPLEMENTED
        self._queued_bytes = 0
        self._dropped_locally = 0
        self._ready = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._end: BaseException | None = None
        self._ended = False
        self._reader: asyncio.Task | None = None
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall | grpc.aio.UnaryStreamCall | None = None
        self._freed = 0  # credits owed to the cloud (see _iterate)

    async def __aenter__(self) -> ResultSubscriber:
        self._reader = asyncio.create_task(self._read(), name=f"subscriber:{self.cloud}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop reading and close the channel."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        await self._close_channel()

    async def _close_channel(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    @property
    def subscribed(self) -> bool:
        """True once the cloud has registered this subscription (on the current or an earlier connection)."""
        return self._subscribed.is_set()

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Wait until the server has registered this subscription (its response headers arrived)."""
        if self._reader is None:
            raise ServiceError("use `async with ResultSubscriber(...)` before waiting on it.")
        waiter = asyncio.ensure_future(self._subscribed.wait())
        try:
            await asyncio.wait({waiter, self._reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self._subscribed.is_set():
            if self._end is not None:
                raise self._end
            raise CloudUnavailableError(f"no answer from the cloud at {self.cloud} within {timeout} s.")

    async def _read(self) -> None:
        """Subscribe, move every response into the bounded queue, resubscribe after retryable failures."""
        attempt = 0
        # The give-up clock: since the start, then since each disconnect; None while subscribed.
        unavailable_since: float | None = time.monotonic()
        try:
            while True:
                try:
                    self._channel = open_channel(self.cloud, self.security, self.max_message_bytes)
                except ConfigError as exc:  # an unreadable CA, certificate or token file: no retry helps
                    self._end = exc
                    return
                stub = inference_pb2_grpc.InferenceServiceStub(self._channel)
                request = inference_pb2.SubscribeRequest(stream_ids=self.stream_ids, after_sequence=self.last_sequence,
                                                         events=self.events)
                call = stub.SubscribeWithCredits() if self._credits else stub.Subscribe(request)
                try:
                    if self._credits:
                        # Credits of an earlier call died with it: grant the room the local queue has now.
                        self._freed = 0  # the new call is granted the queue's whole room
                        await call.write(inference_pb2.SubscribeWithCreditsRequest(
                            subscription=request, credits=max(self.window - len(self._queue), 0)))
                    self._call = call  # only now: the iterator's grants never write beside the first message
                    # A failing call yields empty headers too: only the cloud's marker means it registered us.
                    headers = dict(await call.initial_metadata())
                    if headers.get(SUBSCRIBED_HEADER):
                        self._subscribed.set()
                        attempt, unavailable_since = 0, None
                        self._cloud_max_lag_s = _max_lag(headers.get(MAX_LAG_HEADER))
                    async for response in call:
                        self._offer(response.item if self._credits else response)
                    return  # the cloud ended the subscription with OK: a real end
                except grpc.aio.AioRpcError as exc:
                    failure = f"{exc.code().name}: {exc.details()}"
                    if exc.code() == grpc.StatusCode.UNIMPLEMENTED and self._credits:
                        self._credits = False  # a cloud older than credits: subscribe the old way, at once
                        continue
                    if not self.reconnect or not _retryable(exc):
                        self._end = _wrap(exc, self.cloud, self.security)
                        return
                    if unavailable_since is None:
                        unavailable_since = time.monotonic()
                    if time.monotonic() - unavailable_since > self.backoff.give_up_after:
                        self._end = CloudUnavailableError(
                            f"could not resubscribe to {self.cloud} for {self.backoff.give_up_after:.0f} s "
                            f"({failure}); {connection_hint(failure, self.security)}.")
                        return
                finally:
                    await self._close_channel()
                delay = self.backoff.delay(attempt)
                log.log(logging.INFO if attempt == 0 else logging.WARNING,
                        "subscription to %s ended (%s); resubscribing after sequence %d in %.1f s%s", self.cloud,
                        failure, self.last_sequence, delay,
                        "" if self._subscribed.is_set() else f" ({connection_hint(failure, self.security)})")
                await asyncio.sleep(delay)
                attempt += 1
                self.reconnects += 1
        finally:
            self._ended = True
            self._ready.set()

    def _offer(self, response: inference_pb2.SubscribeResponse) -> None:
        size = response.ByteSize()
        self._queue.append((response, size, time.monotonic()))
        self._queued_bytes += size
        if response.sequence:
            self.last_sequence = response.sequence
        while len(self._queue) > 1 and (len(self._queue) > self.max_queue or self._queued_bytes > self.max_queue_bytes):
            self._drop_oldest()
        self._ready.set()

    def _drop_oldest(self) -> None:
        old, old_size, _ = self._queue.popleft()
        self._queued_bytes -= old_size
        self._dropped_locally += 1 + old.dropped  # what the cloud dropped before it is lost with it

    def __aiter__(self) -> AsyncIterator[SubscribedResult]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[SubscribedResult]:
        if self._reader is None:
            raise ServiceError("use `async with ResultSubscriber(...)` before iterating over it.")
        # self._freed: places taken or dropped since the last grant, granted by half windows or before waiting. It
        # lives on the subscriber, not in this generator: `anext(aiter(subscriber))` makes a new one per result.
        while True:
            self._freed += self._drop_stale()
            while not self._queue:
                if self._freed:
                    # Awaiting the grant lets the reader queue a result: check the queue again before waiting.
                    self._freed = await self._grant(self._freed)
                    continue
                if self._ended:
                    if self._end is not None:
                        raise self._end
                    return
                self._ready.clear()
                await self._ready.wait()
                self._freed += self._drop_stale()
            response, size, _ = self._queue.popleft()
            self._queued_bytes -= size
            self._freed += 1
            if self._freed >= max(1, self.window // 2):
                self._freed = await self._grant(self._freed)
            dropped, self._dropped_locally = response.dropped + self._dropped_locally, 0
            self.dropped_total += dropped
            yield SubscribedResult(response.result, dropped, response.sequence,
                                   response.event if response.HasField("event") else None)

    def _drop_stale(self) -> int:
        """Drop queued results that waited longer than the max lag in all (in the cloud and here); how many."""
        limits = [limit for limit in (self.max_lag_s, self._cloud_max_lag_s) if limit]
        if not limits:
            return 0
        now, max_lag, dropped = time.monotonic(), min(limits), 0
        while self._queue and self._queue[0][0].queued_seconds + now - self._queue[0][2] > max_lag:
            self._drop_oldest()
            dropped += 1
        return dropped

    async def _grant(self, credits: int) -> int:
        """Tell the cloud that `credits` more results fit (a result taken or dropped frees its place). Returns 0, the
        credits left to grant: a call that ended took its credits along, and the next call grants the queue's room."""
        call = self._call
        if not credits or not self._credits or not isinstance(call, grpc.aio.StreamStreamCall):
            return 0
        try:
            await call.write(inference_pb2.SubscribeWithCreditsRequest(credits=credits))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the call ended: the reader resubscribes and grants the queue's room again
        except asyncio.CancelledError:
            # The reader cancelled this call (to resubscribe) while the grant was on its way: not our own end.
            task = asyncio.current_task()
            if not call.cancelled() or (task is not None and task.cancelling()):
                raise
        return 0


def _max_lag(header: str | None) -> float | None:
    """The cloud's max lag from its response header (None: absent, unreadable or 0)."""
    try:
        value = float(header) if header else 0.0
    except ValueError:
        return None
    return value if value > 0 else None


def subscribe(cloud: str, stream_ids: Iterable[str] = (), *, timeout: float | None = None, after_sequence: int = 0,
              reconnect: bool = True, backoff: Backoff = Backoff(), security: ChannelSecurity = ChannelSecurity(),
              max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Iterator[SubscribedResult]:
    """Blocking iterator over a cloud's results; resumes after reconnects; ends when `timeout` seconds passed.

    It asks the cloud for one result each time the caller asks for the next (SubscribeWithCredits), so a slow
    caller's backlog waits in the cloud, which drops (and counts in `dropped`) what waited longer than its
    --subscriber-max-lag. Against a cloud older than credits it reads Subscribe as fast as the caller consumes.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    stream_ids = list(stream_ids)
    # The give-up clock: since the start, then since each disconnect; None while subscribed.
    last_sequence, attempt, credits = after_sequence, 0, True
    unavailable_since: float | None = time.monotonic()
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return
        request = inference_pb2.SubscribeRequest(stream_ids=stream_ids, after_sequence=last_sequence)
        grants: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        with open_blocking_channel(cloud, security, max_message_bytes) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            call = (stub.SubscribeWithCredits(_credit_requests(request, grants), timeout=remaining) if credits
                    else stub.Subscribe(request, timeout=remaining))
            try:
                if dict(call.initial_metadata() or ()).get(SUBSCRIBED_HEADER):
                    attempt, unavailable_since = 0, None
                while True:
                    grants.put(1)  # the caller asks for the next result: grant one
                    response = next(call, None)
                    if response is None:
                        return
                    if credits:
                        response = response.item
                    if response.sequence:
                        last_sequence = response.sequence
                    yield SubscribedResult(response.result, response.dropped, response.sequence)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED and credits:
                    credits = False  # a cloud older than credits: subscribe the old way, at once
                    continue
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None \
                        and time.monotonic() >= deadline - 0.05:
                    return
                if unavailable_since is None:
                    unavailable_since = time.monotonic()
                if not reconnect or not _retryable(exc) \
                        or time.monotonic() - unavailable_since > backoff.give_up_after:
                    raise _wrap(exc, cloud, security) from exc
            finally:
                grants.put(None)
                call.cancel()
        time.sleep(backoff.delay(attempt))
        attempt += 1


def _credit_requests(request: inference_pb2.SubscribeRequest,
                     grants: queue.SimpleQueue[int | None]) -> Iterator[inference_pb2.SubscribeWithCreditsRequest]:
    """The messages of a blocking SubscribeWithCredits call: the subscription, then each grant until None."""
    yield inference_pb2.SubscribeWithCreditsRequest(subscription=request)
    while (credits := grants.get()) is not None:
        yield inference_pb2.SubscribeWithCreditsRequest(credits=credits)


def check_health(cloud: str, service: str = SERVICE_NAME, *, timeout: float = 5.0,
                 security: ChannelSecurity = ChannelSecurity()) -> str:
    """The health status name of `service` at `cloud` (SERVING, NOT_SERVING, ...), as a probe sees it."""
    with open_blocking_channel(cloud, security) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            raise _wrap(exc, cloud, security) from exc
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
