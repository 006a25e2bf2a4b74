"""Subscribing to a cloud's results from other services: async and blocking forms."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitinfer.channel_options import DEFAULT_MAX_MESSAGE_BYTES, channel_options
from splitinfer.errors import CloudUnavailableError, ServiceError
from splitinfer.v1 import inference_pb2, inference_pb2_grpc

SERVICE_NAME = "splitinfer.v1.InferenceService"


@dataclass(frozen=True)
class SubscribedResult:
    """A result and how many results this subscriber lost just before it (it read too slowly)."""

    result: inference_pb2.InferenceResult
    dropped: int
    # The result's position: pass it as `after_sequence` to resume after it.
    sequence: int = 0


def _wrap(exc: grpc.RpcError, cloud: str) -> ServiceError:
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return CloudUnavailableError(f"the cloud at {cloud} is unavailable ({code.name}: {exc.details()}); check that "
                                     "`splitinfer cloud` runs there and the address is right.")
    return ServiceError(f"subscription to {cloud} failed ({code.name}: {exc.details()}).")


class ResultSubscriber:
    """Async iterator over a cloud's results, filtered by stream id (empty: every stream).

        async with ResultSubscriber("localhost:50051", ["cam-1"]) as results:
            async for item in results:
                print(item.result.frame_id, len(item.result.detections), item.dropped)
    """

    def __init__(self, cloud: str, stream_ids: Iterable[str] = (), *,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.cloud = cloud
        self.stream_ids = list(stream_ids)
        self._options = channel_options(max_message_bytes)
        self._channel: grpc.aio.Channel | None = None
        self._call = None

    async def __aenter__(self) -> ResultSubscriber:
        self._channel = grpc.aio.insecure_channel(self.cloud, options=self._options)
        stub = inference_pb2_grpc.InferenceServiceStub(self._channel)
        self._call = stub.Subscribe(inference_pb2.SubscribeRequest(stream_ids=self.stream_ids))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Wait until the server has registered this subscription (its response headers arrived)."""
        if self._call is None:
            raise ServiceError("use `async with ResultSubscriber(...)` before waiting on it.")
        import asyncio

        try:
            await asyncio.wait_for(self._call.initial_metadata(), timeout)
        except grpc.aio.AioRpcError as exc:
            raise _wrap(exc, self.cloud) from exc
        except asyncio.TimeoutError as exc:
            raise CloudUnavailableError(f"no answer from the cloud at {self.cloud} within {timeout} s.") from exc

    def __aiter__(self) -> AsyncIterator[SubscribedResult]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[SubscribedResult]:
        if self._call is None:
            raise ServiceError("use `async with ResultSubscriber(...)` before iterating over it.")
        try:
            async for response in self._call:
                yield SubscribedResult(response.result, response.dropped, response.sequence)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and self._call is None:
                return
            raise _wrap(exc, self.cloud) from exc


def subscribe(cloud: str, stream_ids: Iterable[str] = (), *, timeout: float | None = None, after_sequence: int = 0,
              max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Iterator[SubscribedResult]:
    """Blocking iterator over a cloud's results (ends when the cloud ends the subscription or `timeout` passes)."""
    with grpc.insecure_channel(cloud, options=channel_options(max_message_bytes)) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        call = stub.Subscribe(inference_pb2.SubscribeRequest(stream_ids=list(stream_ids),
                                                             after_sequence=after_sequence), timeout=timeout)
        try:
            for response in call:
                yield SubscribedResult(response.result, response.dropped, response.sequence)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None:
                return
            raise _wrap(exc, cloud) from exc
        finally:
            call.cancel()


def check_health(cloud: str, service: str = SERVICE_NAME, *, timeout: float = 5.0) -> str:
    """The health status name of `service` at `cloud` (SERVING, NOT_SERVING, ...), as a probe sees it."""
    with grpc.insecure_channel(cloud, options=channel_options()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            raise _wrap(exc, cloud) from exc
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
