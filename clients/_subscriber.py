"""Subscribing to a cloud's results from other services: async and blocking forms that survive reconnects.

Both forms resume by themselves: when the call fails with UNAVAILABLE (a cloud shutting down says so with
RetryInfo; GOAWAY, max connection age and a lost connection look the same) they subscribe again after
the last position received, with exponential backoff and jitter, to the same address (behind a Service, any
replica; with a results bus every replica serves every stream). They give up only after `give_up_after`
seconds without a subscription, counted from the disconnect (never from the last result: a quiet stream
resumes across any number of restarts, within the bus's retention). Any other status (a bad stream id, no
permission) is final and raised. The async form reads the call as fast as it arrives into a local queue
bounded in results and bytes, so a consumer slower than the results loses the oldest ones, counted in
`dropped`, instead of letting gRPC's transport buffers hide an ever older backlog.
"""

from __future__ import annotations

import asyncio
import collections
import logging
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

    The local queue keeps at most `max_queue` results and `max_queue_bytes` bytes, and with `max_lag_s` no
    result that waited longer than that (the newest is always kept); what it drops is counted in the next
    result's `dropped`. `reconnect=False` ends at the first failure instead (raising CloudUnavailableError
    or ServiceError).
    """

    def __init__(self, cloud: str, stream_ids: Iterable[str] = (), *, after_sequence: int = 0,
                 reconnect: bool = True, backoff: Backoff = Backoff(), max_queue: int = 256,
                 max_queue_bytes: int = 16 * 1024 * 1024, max_lag_s: float | None = None,
                 security: ChannelSecurity = ChannelSecurity(),
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, events: bool = False) -> None:
        if max_queue < 1 or max_queue_bytes < 1:
            raise ServiceError(f"max_queue and max_queue_bytes must be at least 1, got {max_queue}, {max_queue_bytes}.")
        self.cloud = cloud
        self.stream_ids = list(stream_ids)
        self.events = events  # also the streams' track events (SubscribedResult.event)
        self.last_sequence = after_sequence
        self.reconnect = reconnect
        self.backoff = backoff
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.max_lag_s = max_lag_s
        self.max_message_bytes = max_message_bytes
        self.security = security
        self.reconnects = 0
        self.dropped_total = 0
        # (response, its size, when it arrived)
        self._queue: collections.deque[tuple[inference_pb2.SubscribeResponse, int, float]] = collections.deque()
        self._queued_bytes = 0
        self._dropped_locally = 0
        self._ready = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._end: BaseException | None = None
        self._ended = False
        self._reader: asyncio.Task | None = None
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.UnaryStreamCall | None = None

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
                call = self._call = stub.Subscribe(inference_pb2.SubscribeRequest(
                    stream_ids=self.stream_ids, after_sequence=self.last_sequence, events=self.events))
                try:
                    # A failing call yields empty headers too: only the cloud's marker means it registered us.
                    if dict(await call.initial_metadata()).get(SUBSCRIBED_HEADER):
                        self._subscribed.set()
                        attempt, unavailable_since = 0, None
                    async for response in call:
                        self._offer(response)
                    return  # the cloud ended the subscription with OK: a real end
                except grpc.aio.AioRpcError as exc:
                    failure = f"{exc.code().name}: {exc.details()}"
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
        while True:
            while not self._queue:
                if self._ended:
                    if self._end is not None:
                        raise self._end
                    return
                self._ready.clear()
                await self._ready.wait()
            if self.max_lag_s is not None:
                too_old = time.monotonic() - self.max_lag_s
                while len(self._queue) > 1 and self._queue[0][2] < too_old:
                    self._drop_oldest()
            response, size, _ = self._queue.popleft()
            self._queued_bytes -= size
            dropped, self._dropped_locally = response.dropped + self._dropped_locally, 0
            self.dropped_total += dropped
            yield SubscribedResult(response.result, dropped, response.sequence,
                                   response.event if response.HasField("event") else None)


def subscribe(cloud: str, stream_ids: Iterable[str] = (), *, timeout: float | None = None, after_sequence: int = 0,
              reconnect: bool = True, backoff: Backoff = Backoff(), security: ChannelSecurity = ChannelSecurity(),
              max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Iterator[SubscribedResult]:
    """Blocking iterator over a cloud's results; resumes after reconnects; ends when `timeout` seconds passed.

    It reads only as fast as the caller consumes: a slow caller's backlog waits in gRPC's buffers (bounded,
    and the cloud bounds its own queue); use ResultSubscriber to lose the oldest results instead.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    stream_ids = list(stream_ids)
    # The give-up clock: since the start, then since each disconnect; None while subscribed.
    last_sequence, attempt = after_sequence, 0
    unavailable_since: float | None = time.monotonic()
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return
        with open_blocking_channel(cloud, security, max_message_bytes) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            call = stub.Subscribe(inference_pb2.SubscribeRequest(stream_ids=stream_ids, after_sequence=last_sequence),
                                  timeout=remaining)
            try:
                if dict(call.initial_metadata() or ()).get(SUBSCRIBED_HEADER):
                    attempt, unavailable_since = 0, None
                for response in call:
                    if response.sequence:
                        last_sequence = response.sequence
                    yield SubscribedResult(response.result, response.dropped, response.sequence)
                return
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None \
                        and time.monotonic() >= deadline - 0.05:
                    return
                if unavailable_since is None:
                    unavailable_since = time.monotonic()
                if not reconnect or not _retryable(exc) \
                        or time.monotonic() - unavailable_since > backoff.give_up_after:
                    raise _wrap(exc, cloud, security) from exc
            finally:
                call.cancel()
        time.sleep(backoff.delay(attempt))
        attempt += 1


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
