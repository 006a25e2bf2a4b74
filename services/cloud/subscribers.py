"""Fan-out of inference results to `Subscribe` streams.

Each subscriber has its own bounded queue. Publishing never waits: when a subscriber's queue is full
its oldest result is dropped and counted, so a slow reader loses results instead of slowing inference.
Everything here runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from splitinfer.v1 import inference_pb2


class Subscription:
    """One subscriber: a filter on stream ids and a bounded queue of results."""

    def __init__(self, stream_ids: Iterable[str], capacity: int,
                 permits: Callable[[str], bool] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"a subscriber queue needs room for at least one result, got {capacity}")
        self.stream_ids = frozenset(stream_ids)
        self._permits = permits  # authorization: the streams this subscriber's identity may read
        self._queue: collections.deque[inference_pb2.InferenceResult] = collections.deque(maxlen=capacity)
        self._ready = asyncio.Event()
        self._dropped_since_read = 0
        self.dropped_total = 0
        self.closed = False

    def wants(self, stream_id: str) -> bool:
        if self._permits is not None and not self._permits(stream_id):
            return False
        return not self.stream_ids or stream_id in self.stream_ids

    def offer(self, result: inference_pb2.InferenceResult) -> bool:
        """Queue a result; True if the oldest queued result had to be dropped to make room."""
        dropped = len(self._queue) == self._queue.maxlen
        if dropped:
            self._dropped_since_read += 1
            self.dropped_total += 1
        self._queue.append(result)  # a full deque with maxlen discards its oldest item
        self._ready.set()
        return dropped

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self) -> tuple[inference_pb2.InferenceResult, int] | None:
        """The next result and how many were dropped before it; None once closed and empty."""
        while not self._queue:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        dropped, self._dropped_since_read = self._dropped_since_read, 0
        return self._queue.popleft(), dropped


class SubscriberHub:
    """All subscriptions of one server; `publish` is non-blocking and O(subscribers)."""

    def __init__(self, capacity: int, on_drop: Callable[[int], None] | None = None) -> None:
        self.capacity = capacity
        self._subscriptions: set[Subscription] = set()
        self._on_drop = on_drop
        self._closed = False

    def __len__(self) -> int:
        return len(self._subscriptions)

    @contextmanager
    def subscribe(self, stream_ids: Iterable[str],
                  permits: Callable[[str], bool] | None = None) -> Iterator[Subscription]:
        """Register a subscription for the duration of the `with` block; `permits` filters what it may read."""
        subscription = Subscription(stream_ids, self.capacity, permits)
        if self._closed:
            subscription.close()
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    def publish(self, result: inference_pb2.InferenceResult) -> int:
        """Offer a result to every interested subscriber; returns how many results were dropped."""
        dropped = 0
        for subscription in self._subscriptions:
            if subscription.wants(result.stream_id) and subscription.offer(result):
                dropped += 1
        if dropped and self._on_drop is not None:
            self._on_drop(dropped)
        return dropped

    def close(self) -> None:
        """End every subscription once its queue is read (server shutdown)."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.close()
