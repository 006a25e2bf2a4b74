"""Per-stream state on the cloud: one connection per stream id, recent publications kept across reconnects.

An edge that reconnects sends the same stream id; the new connection takes over the stream (the old
one, if the server has not noticed it died, is told to stop) and finds the frames recently published
to subscribers, so a frame resent after a reconnect reaches subscribers only once. A stream id belongs to
the identity that opened it for as long as its state is remembered: another identity cannot take it over.
States are remembered per identity, each identity's bounded on its own: opening new ids evicts only the
opener's own oldest closed streams, never another identity's (so no one can flush a victim's ownership).
The last decoded levels (the reference of temporal coding), and a pixels stream's video decoder, live only as long as the
connection: every connection starts with an intra (key) frame. A stream's partition is part of its identity:
resuming with another partition, model or cut starts a fresh state.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

from splitinfer.codec import TemporalDecoder
from splitinfer.services.pixels import PixelDecoder
from splitinfer.v1 import inference_pb2

PUBLISHED_MEMORY = 64


class StreamOwnedError(Exception):
    """The stream id is held by another identity (see services/cloud/access.py)."""


class IdentityStreamLimitError(Exception):
    """The identity already has as many streams open as it may."""


@dataclass
class StreamState:
    """What the cloud remembers about one stream id (touched by one frame at a time)."""

    stream_id: str
    model: str
    cut: str
    owner: str = ""  # the identity that opened the stream (services/cloud/access.py)
    # The levels of the last frame decoded: the reference of the next inter frame.
    decoder: TemporalDecoder = field(default_factory=TemporalDecoder)
    # (frame id, capture time) of recent results sent to subscribers: a frame resent after a reconnect
    # is not published twice, while a restarted edge (frame ids from 0 again, new capture times) is.
    published: collections.deque = field(default_factory=lambda: collections.deque(maxlen=PUBLISHED_MEMORY))
    # What the frames carry (inference_pb2.Partition; never UNSPECIFIED) and, for pixels, the video coding and
    # the stream's own video decoder.
    partition: inference_pb2.Partition = inference_pb2.PARTITION_FEATURES
    pixel_coding: inference_pb2.PixelCoding | None = None
    pixels: PixelDecoder | None = None

    def __post_init__(self) -> None:
        if self.partition == inference_pb2.PARTITION_PIXELS and self.pixels is None:
            self.pixels = PixelDecoder()

    def restart_decoders(self) -> None:
        """Forget every reference: the next frame must be intra (features) or a key frame (pixels)."""
        self.decoder.restart()
        if self.pixels is not None:
            self.pixels.restart()

    def first_publication(self, frame_id: int, capture_ns: int) -> bool:
        """True the first time a frame is seen; remembers it."""
        key = (frame_id, capture_ns)
        if key in self.published:
            return False
        self.published.append(key)
        return True


class Connection:
    """One `Infer` call that owns a stream; `stop()` asks it to finish (drain or takeover)."""

    def __init__(self, state: StreamState, peer: str = "") -> None:
        self.state = state
        self.peer = peer
        self.stopped = asyncio.Event()
        self.stop_reason = ""
        # When the stream last got a result that is not an error, or opened: the idle timeout's clock. Frames the
        # cloud answers with an error (an empty keepalive frame) do not reset it, so they cannot hold a slot.
        self.last_served_at = time.monotonic()

    def stop(self, reason: str) -> None:
        if not self.stopped.is_set():
            self.stop_reason = reason
            self.stopped.set()


def peer_address(peer: str) -> str:
    """The client's address without its port, from grpc's `context.peer()` ("ipv4:10.0.0.7:53122" -> "ipv4:10.0.0.7")."""
    head, sep, port = peer.rpartition(":")
    if sep and port.isdigit() and ":" in head:
        return head
    return peer


class StreamRegistry:
    """Stream states by id: at most `max_streams` connected (and `max_streams_per_peer` from one address, 0: no
    such cap), at most `max_retained` remembered per identity (its own oldest closed streams are forgotten first)."""

    def __init__(self, max_streams: int, max_retained: int | None = None, *, max_streams_per_peer: int = 0) -> None:
        self.max_streams = max_streams
        self.max_streams_per_peer = max_streams_per_peer
        self.max_retained = max_retained or max(4 * max_streams, 16)
        self._states: dict[str, StreamState] = {}
        # Per owner, its stream ids oldest first: eviction looks only at the opener's own.
        self._by_owner: dict[str, collections.OrderedDict[str, None]] = {}
        self._connections: dict[str, Connection] = {}

    @property
    def open_streams(self) -> int:
        return len(self._connections)

    def connections(self) -> list[Connection]:
        return list(self._connections.values())

    def is_full(self, stream_id: str) -> bool:
        """True if a new stream (not a takeover of `stream_id`) would exceed max_streams."""
        return stream_id not in self._connections and len(self._connections) >= self.max_streams

    def open_for(self, owner: str) -> int:
        """Streams open now for one identity."""
        return sum(1 for connection in self._connections.values() if connection.state.owner == owner)

    def streams_of_peer(self, peer: str, *, besides: str = "") -> int:
        """Connections open from one peer address, not counting stream id `besides` (a takeover replaces it)."""
        return sum(1 for stream_id, c in self._connections.items() if c.peer == peer and stream_id != besides)

    def refusal(self, stream_id: str, peer: str) -> str | None:
        """Why a stream from `peer` cannot be attached now ("max_streams", "max_streams_per_peer"), or None.

        Check and attach() without an await between them, so that concurrent calls cannot both pass.
        """
        if self.is_full(stream_id):
            return "max_streams"
        if self.max_streams_per_peer and self.streams_of_peer(peer, besides=stream_id) >= self.max_streams_per_peer:
            return "max_streams_per_peer"
        return None

    def attach(self, stream_id: str, model: str, cut: str, peer: str = "", owner: str = "",
               owner_limit: int | None = None, *,
               partition: inference_pb2.Partition = inference_pb2.PARTITION_FEATURES,
               pixel_coding: inference_pb2.PixelCoding | None = None) -> Connection:
        """Open (or resume) a stream; a live connection of the same id and owner is stopped and replaced.

        Raises StreamOwnedError if another identity holds the id, IdentityStreamLimitError if `owner` already
        has `owner_limit` other streams open.
        """
        known = self._states.get(stream_id)
        if known is not None and known.owner != owner:
            raise StreamOwnedError(stream_id)
        if owner_limit is not None and stream_id not in self._connections and self.open_for(owner) >= owner_limit:
            raise IdentityStreamLimitError(owner)
        previous = self._connections.pop(stream_id, None)
        if previous is not None:
            previous.stop("a newer connection resumed this stream id")
        state = self._states.get(stream_id)
        if (state is None or state.model != model or state.cut != cut or state.partition != partition
                or state.pixel_coding != pixel_coding):
            state = StreamState(stream_id, model, cut, owner, partition=partition, pixel_coding=pixel_coding)
        state.restart_decoders()  # the edge starts every connection with an intra frame
        self._states[stream_id] = state
        owned = self._by_owner.setdefault(owner, collections.OrderedDict())
        owned[stream_id] = None
        owned.move_to_end(stream_id)
        connection = Connection(state, peer)
        self._connections[stream_id] = connection
        self._forget_oldest(owned)
        return connection

    def _forget_oldest(self, owned: collections.OrderedDict[str, None]) -> None:
        """Forget one identity's oldest closed streams while it holds more than max_retained (open ones stay)."""
        excess = len(owned) - self.max_retained
        for stream_id in list(owned):
            if excess <= 0:
                break
            if stream_id not in self._connections:
                del owned[stream_id]
                del self._states[stream_id]
                excess -= 1

    def detach(self, connection: Connection) -> None:
        """Forget the connection; the small state is kept for a later resume, the reference levels are not."""
        stream_id = connection.state.stream_id
        if self._connections.get(stream_id) is connection:
            del self._connections[stream_id]
            connection.state.restart_decoders()  # a resumed stream starts with an intra frame anyway

    def stop_all(self, reason: str) -> None:
        for connection in self._connections.values():
            connection.stop(reason)
