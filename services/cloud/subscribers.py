"""Fan-out of inference results to `Subscribe` streams, in memory (one cloud process, no results bus).

Each result gets a position (`sequence`, increasing; it starts at the process start time in microseconds
so that positions keep increasing across restarts of the cloud). Each subscriber has its own queue bounded
in results AND bytes AND time: publishing never waits; when a queue is over either size bound its oldest
results are dropped, a result that waited longer than the max lag is dropped when it would be sent, and the
subscriber is told how many with the next result it reads. A short history
(bounded the same way) lets a subscriber that reconnects (GOAWAY, max connection age) resume after the last
position it saw. Track events (docs/TRACKS.md) share the positions and the queues; only subscriptions that
asked for them get them. Everything here runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

from splitinfer.v1 import inference_pb2

# Credits a client may hold at once: granting more is harmless, it only stops counting.
MAX_CREDITS = 2**32

# What a subscription queues: a result, or a track event for subscriptions that asked for events.
Message = inference_pb2.InferenceResult | inference_pb2.TrackEvent


class Subscription:
    """One subscriber: a filter on stream ids (and on events) and a queue bounded in messages, bytes and
    (max_lag_s > 0) time."""

    def __init__(self, stream_ids: Iterable[str], capacity: int, max_bytes: int,
                 on_drop: Callable[[int], None] | None = None, permits: Callable[[str], bool] | None = None,
                 max_lag_s: float = 0.0, events: bool = False) -> None:
        if capacity < 1 or max_bytes < 1:
            raise ValueError(f"a subscriber queue needs room for at least one result and byte, got {capacity} "
                             f"results and {max_bytes} bytes")
        if max_lag_s < 0:
            raise ValueError(f"a subscriber's max lag is 0 (none) or more seconds, got {max_lag_s}")
        self.max_lag_s = max_lag_s
        self.stream_ids = frozenset(stream_ids)
        self.events = events  # also track events, not only results
        self._permits = permits  # authorization: the streams this subscriber's identity may read
        self.capacity = capacity
        self.max_bytes = max_bytes
        # (sequence, result or event, size, when it was queued: time.monotonic())
        self._queue: collections.deque[tuple[int, Message, int, float]] = collections.deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._dropped_since_read = 0
        self._on_drop = on_drop
        self.dropped_total = 0
        self.closed = False
        self.close_reason = ""
        self.last_sequence = 0  # of the newest result offered
        # Results the client may still receive (SubscribeWithCredits); None: as many as gRPC accepts (Subscribe).
        self.credits: int | None = None

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._queue)

    def wants(self, stream_id: str) -> bool:
        """True for a stream this subscriber asked for (none named: every stream) and may read."""
        if self._permits is not None and not self._permits(stream_id):
            return False
        return not self.stream_ids or stream_id in self.stream_ids

    def skip(self, sequence: int) -> None:
        """A message at `sequence` that this subscriber does not get (another stream, a forgery): passed over."""
        self.last_sequence = max(self.last_sequence, sequence)

    def wants_message(self, message: Message) -> bool:
        """True for a result or (if asked for) an event of a stream this subscriber wants."""
        if isinstance(message, inference_pb2.TrackEvent) and not self.events:
            return False
        return self.wants(message.stream_id)

    def offer(self, sequence: int, result: Message, size: int | None = None) -> int:
        """Queue a result; returns how many of the oldest queued results were dropped to stay within bounds."""
        size = result.ByteSize() if size is None else size
        self.last_sequence = max(self.last_sequence, sequence)
        self._queue.append((sequence, result, size, time.monotonic()))
        self._bytes += size
        dropped = 0
        # The newest result always stays, even alone over max_bytes: it is already bounded by the message limit.
        while len(self._queue) > 1 and (len(self._queue) > self.capacity or self._bytes > self.max_bytes):
            self._drop_oldest()
            dropped += 1
        self._count_dropped(dropped)
        self._ready.set()
        return dropped

    def _drop_oldest(self) -> None:
        _, _, old_size, _ = self._queue.popleft()
        self._bytes -= old_size

    def _count_dropped(self, dropped: int) -> None:
        if dropped:
            self._dropped_since_read += dropped
            self.dropped_total += dropped
            if self._on_drop is not None:
                self._on_drop(dropped)

    def _drop_stale(self) -> None:
        """Drop every queued result that waited longer than max_lag_s (the newest too: it is as stale)."""
        if self.max_lag_s <= 0:
            return
        too_old = time.monotonic() - self.max_lag_s
        dropped = 0
        while self._queue and self._queue[0][3] < too_old:
            self._drop_oldest()
            dropped += 1
        self._count_dropped(dropped)

    def grant(self, credits: int) -> None:
        """The client will take `credits` more results: from now on, send only as many as it granted."""
        self.credits = min((self.credits or 0) + credits, MAX_CREDITS)
        if self.credits:
            self._ready.set()

    def close(self, reason: str = "") -> None:
        """End the subscription once its queue is read (or once its client has no credit left)."""
        self.closed = True
        self.close_reason = reason
        self._ready.set()

    async def next(self) -> inference_pb2.SubscribeResponse | None:
        """The next result or event to send (with what was dropped before it, its sequence and its time queued),
        never one older than max_lag_s: call it only when it can be written. None once closed and empty."""
        while True:
            self._drop_stale()
            if self._queue and self.credits != 0:
                break
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.credits is not None:
            self.credits -= 1
        dropped, self._dropped_since_read = self._dropped_since_read, 0
        sequence, message, size, queued_at = self._queue.popleft()
        self._bytes -= size
        response = inference_pb2.SubscribeResponse(dropped=dropped, sequence=sequence,
                                                   queued_seconds=time.monotonic() - queued_at)
        if isinstance(message, inference_pb2.TrackEvent):
            response.event.CopyFrom(message)
        else:
            response.result.CopyFrom(message)
        return response


class SubscriberHub:
    """All subscriptions of one server; `publish` is non-blocking and O(subscribers)."""

    def __init__(self, capacity: int, max_bytes: int = 16 * 1024 * 1024,
                 on_drop: Callable[[int], None] | None = None, max_lag_s: float = 0.0) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.max_lag_s = max_lag_s
        self._subscriptions: set[Subscription] = set()
        self._on_drop = on_drop
        self._closed = False
        self._close_reason = ""
        self._sequence = time.time_ns() // 1000
        # Recent results for resuming subscribers, bounded like one subscriber's queue.
        self._history = Subscription((), capacity, max_bytes)

    def __len__(self) -> int:
        return len(self._subscriptions)

    @property
    def last_sequence(self) -> int:
        return self._sequence

    @asynccontextmanager
    async def subscribe(self, stream_ids: Iterable[str], after_sequence: int = 0, *,
                        permits: Callable[[str], bool] | None = None, events: bool = False
                        ) -> AsyncIterator[Subscription]:
        """Register a subscription for the `with` block, resuming after `after_sequence`; `permits` filters too;
        `events`: track events as well as results."""
        subscription = Subscription(stream_ids, self.capacity, self.max_bytes, self._on_drop, permits,
                                    self.max_lag_s, events)
        if after_sequence:
            for sequence, result, size, _ in self._history._queue:
                if sequence > after_sequence and subscription.wants_message(result):
                    subscription.offer(sequence, result, size)
        if self._closed:
            subscription.close(self._close_reason)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    async def publish(self, result: Message) -> int:
        """Offer a result to every interested subscriber (never waits); returns how many results were dropped."""
        self._sequence += 1
        size = result.ByteSize()
        self._history.offer(self._sequence, result, size)
        dropped = 0
        for subscription in self._subscriptions:
            if subscription.wants_message(result):
                dropped += subscription.offer(self._sequence, result, size)
        return dropped

    async def publish_event(self, event: inference_pb2.TrackEvent) -> int:
        """Offer a track event to the subscribers that asked for events (never waits), like a result."""
        return await self.publish(event)

    async def flush(self) -> None:
        """Nothing to wait for: publishing in memory is immediate (the bus's flush waits for its acks)."""

    def close(self, reason: str = "") -> None:
        """End every subscription once its queue is read (server shutdown)."""
        self._closed = True
        self._close_reason = reason
        for subscription in self._subscriptions:
            subscription.close(reason)

    async def aclose(self) -> None:
        """Release resources (nothing in memory)."""
