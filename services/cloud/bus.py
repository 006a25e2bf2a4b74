"""The results bus: every cloud replica publishes each result to NATS JetStream, and serves Subscribe from it.

With `--nats URL` the bus is the source of truth: a result is published (and acknowledged by JetStream)
before the cloud answers the frame, so a result an edge has seen is on the bus; `Subscribe` on any replica
reads the bus from a position (the JetStream stream sequence), so subscribers see every replica's streams
and resume after a restart, GOAWAY or max connection age with no gap and no duplicate.

Layout on the bus (docs/RESULTS_SCHEMA.md):
- JetStream stream `SPLITINFER_RESULTS` (limits retention: max age, max bytes; file storage; duplicate window)
  holding subjects `splitinfer.results.<token>` (protobuf InferenceResult, header Content-Type) and, with
  `--nats-json`, `splitinfer.events.<token>` (CloudEvents 1.0 structured JSON); with --tracking, the track events
  on `splitinfer.tracks.<token>` (CloudEvents JSON, Nats-Msg-Id the event's stable id; docs/TRACKS.md).
- <token> is the stream id as one subject token (splitinfer.bus_subjects: `site-a/cam-1` is `site-a%2Fcam-1`).
- Nats-Msg-Id `<stream_id>/<frame_id>@<capture ns>`: a frame resent after a reconnect, to this or another
  replica, is stored once; the capture time tells a restarted edge's frame 0 from the previous run's frame 0.

Security (docs/SECURITY.md): the connection's TLS and credentials come from a BusConnection; with a result-key
file (`--bus-keys`, splitinfer.result_signing) every message is signed, and Subscribe serves only messages whose
signature verifies: anything else on our subjects (another NATS user's publication) is counted in
`splitinfer_bus_unverified_results{reason}`, logged and skipped.

nats-py is an optional dependency (`pip install 'splitinfer[bus]'`); it is imported on first use.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter

from splitinfer.bus_connection import BusConnection, import_nats, is_permission_violation
from splitinfer.bus_subjects import (
    EVENTS_PREFIX,
    RESULTS_PREFIX,
    STREAM_NAME,
    TRACKS_PREFIX,
    events_subject,
    results_subject,
    stream_id_from_token,
    subject_token,
    tracks_subject,
)
from splitinfer.errors import BusAuthError, BusError
from splitinfer.result_signing import ResultKeys, UnverifiedResultError
from splitinfer.results import (
    PROTOBUF_CONTENT_TYPE,
    event_from_cloudevent,
    event_to_cloudevent,
    result_id,
    to_cloudevent,
)
from splitinfer.services.cloud.subscribers import Message, Subscription
from splitinfer.v1 import inference_pb2

log = logging.getLogger("splitinfer.cloud.bus")

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


def dedup_id(result: inference_pb2.InferenceResult) -> str:
    """Nats-Msg-Id of a result: its id plus the capture time (see the module docstring)."""
    return f"{result_id(result)}@{result.capture.capture_time.ToNanoseconds()}"


class ResultBus:
    """Publisher and subscriber side of the bus for one cloud process; same interface as SubscriberHub."""

    def __init__(self, connection: BusConnection | str, *, capacity: int, max_bytes: int, max_age_s: float = 24 * 3600.0,
                 stream_max_bytes: int = 1024**3, duplicate_window_s: float = 120.0, publish_json: bool = False,
                 source: str | None = None, publish_timeout_s: float = 5.0,
                 on_drop: Callable[[int], None] | None = None, registry: Any = None,
                 keys: Callable[[], ResultKeys] | None = None, max_lag_s: float = 0.0) -> None:
        self.connection = connection if isinstance(connection, BusConnection) else BusConnection(connection)
        self.url = self.connection.url
        # The result keys now (re-read on change): signs what is published, verifies what is read. None: neither.
        self.keys = keys
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.max_lag_s = max_lag_s  # per subscriber: results that waited longer are dropped, not sent
        self.max_age_s = max_age_s
        self.stream_max_bytes = stream_max_bytes
        self.duplicate_window_s = duplicate_window_s
        self.publish_json = publish_json
        # CloudEvents `source`: this replica.
        self.source = source or f"//splitinfer/cloud/{socket.gethostname()}"
        self.publish_timeout_s = publish_timeout_s
        self._on_drop = on_drop
        registry = registry if registry is not None else CollectorRegistry()
        self.unpublished = Counter("splitinfer_bus_unpublished_results", "Results the results bus did not store "
                                   "(it was unreachable or did not acknowledge in time).", registry=registry)
        self.duplicates = Counter("splitinfer_bus_duplicate_results", "Results the bus already held (a frame "
                                  "resent after a reconnect); stored once.", registry=registry)
        self.unverified = Counter("splitinfer_bus_unverified_results", "Messages on the bus's result subjects that "
                                  "were not served because their signature is missing, unknown or wrong (a NATS "
                                  "user other than the clouds published them), by reason.", ["reason"],
                                  registry=registry)
        # The server's recent complaints (permissions violations arrive through the error callback only).
        self._errors: collections.deque[str] = collections.deque(maxlen=16)
        self._unverified_seen: collections.Counter[str] = collections.Counter()
        self._nc: Any = None
        self._js: Any = None
        # Each subscription and its JetStream consumer subscription.
        self._subscriptions: dict[Subscription, Any] = {}
        self._closed = False
        self._close_reason = ""

    def __len__(self) -> int:
        return len(self._subscriptions)

    async def start(self, connect_timeout_s: float = 30.0) -> None:
        """Connect (retrying for up to `connect_timeout_s`) and make sure the JetStream stream has our limits.

        BusAuthError when the bus refuses our credentials or TLS, or our NATS user may not manage the stream.
        """
        nats = import_nats()
        api = nats.js.api
        self._nc = await self.connection.connect(name="splitinfer-cloud", timeout_s=connect_timeout_s,
                                                 error_cb=self._log_error)
        self._js = self._nc.jetstream(timeout=self.publish_timeout_s)
        config = api.StreamConfig(
            name=STREAM_NAME, subjects=[f"{RESULTS_PREFIX}.>", f"{EVENTS_PREFIX}.>", f"{TRACKS_PREFIX}.>"],
            retention=api.RetentionPolicy.LIMITS, storage=api.StorageType.FILE, discard=api.DiscardPolicy.OLD,
            max_age=self.max_age_s, max_bytes=self.stream_max_bytes, duplicate_window=self.duplicate_window_s,
        )
        try:
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self._js.update_stream(config)  # exists with other limits: ours win (all replicas agree)
        except Exception as exc:  # noqa: BLE001
            await self._nc.close()
            violation = is_permission_violation(list(self._errors))
            if violation is not None:
                raise BusAuthError(f"the NATS user of this cloud ({self.connection.credential_flags}) may not manage "
                                   f"the JetStream stream {STREAM_NAME} ({violation}); is it a consumer's read-only "
                                   "user? Give the cloud the clouds' user (deploy/nats/nats-server.conf).") from exc
            raise BusError(f"the bus at {self.url} refused the JetStream stream {STREAM_NAME}: {exc}; is JetStream "
                           "enabled (nats-server -js)?") from exc

    async def _log_error(self, exc: Exception) -> None:
        self._errors.append(str(exc))
        log.warning("results bus: %s", exc)

    def _headers(self, subject: str, msg_id: str, payload: bytes, content_type: str) -> dict[str, str]:
        headers = {"Nats-Msg-Id": msg_id, "Content-Type": content_type}
        if self.keys is not None:
            headers.update(self.keys().sign(subject, msg_id, payload))
        return headers

    async def publish(self, result: inference_pb2.InferenceResult) -> int:
        """Store the result on the bus and wait for JetStream's acknowledgement; returns 0 (nothing dropped)."""
        msg_id = dedup_id(result)
        if self._nc is None or not self._nc.is_connected:
            # Waiting out the publish timeout per frame would stall every stream while the bus is away.
            self.unpublished.inc()
            log.warning("results bus at %s is not connected: %s was not published", self.url, msg_id)
            return 0
        try:
            subject, payload = results_subject(result.stream_id), result.SerializeToString()
            ack = await self._js.publish(subject, payload,
                                         headers=self._headers(subject, msg_id, payload, PROTOBUF_CONTENT_TYPE))
            if ack.duplicate:
                self.duplicates.inc()
            if self.publish_json:
                event = to_cloudevent(result, self.source)
                event["id"] = msg_id
                subject = events_subject(result.stream_id)
                payload = json.dumps(event, separators=(",", ":")).encode()
                await self._js.publish(subject, payload, headers=self._headers(subject, msg_id + "/ce", payload,
                                                                               CLOUDEVENTS_CONTENT_TYPE))
        except Exception as exc:  # noqa: BLE001 - a bus outage must not end the edge's stream
            self.unpublished.inc()
            log.warning("could not publish %s to the results bus: %s", msg_id, exc)
        return 0

    async def last_result(self, stream_id: str) -> inference_pb2.InferenceResult | None:
        """The stream's last result on the bus, where its tracks resume on this replica after a failover (None:
        none, the bus is away, or the message is unreadable or unsigned where --bus-keys asks for signatures)."""
        if self._nc is None or not self._nc.is_connected:
            return None
        from nats.js.errors import NotFoundError

        try:
            msg = await self._js.get_last_msg(STREAM_NAME, results_subject(stream_id))
        except Exception as exc:  # noqa: BLE001 - no message (NotFoundError) or an outage: the tracks start afresh
            if not isinstance(exc, NotFoundError):
                log.warning("could not read stream %s's last result from the results bus: %s", stream_id, exc)
            return None
        if self.keys is not None and not self.verified(msg, self.keys()):
            return None
        result = inference_pb2.InferenceResult()
        try:
            result.ParseFromString(msg.data or b"")
        except DecodeError:
            log.warning("stream %s's last result on the results bus is not an InferenceResult", stream_id)
            return None
        return result if result.stream_id == stream_id else None

    async def publish_event(self, event: inference_pb2.TrackEvent) -> int:
        """Store a track event on the bus as CloudEvents JSON (Nats-Msg-Id its stable id); returns 0."""
        if self._nc is None or not self._nc.is_connected:
            self.unpublished.inc()
            log.warning("results bus at %s is not connected: track event %s was not published", self.url, event.id)
            return 0
        try:
            subject = tracks_subject(event.stream_id)
            payload = json.dumps(event_to_cloudevent(event, self.source), separators=(",", ":")).encode()
            ack = await self._js.publish(subject, payload, headers=self._headers(subject, event.id, payload,
                                                                               CLOUDEVENTS_CONTENT_TYPE))
            if ack.duplicate:
                self.duplicates.inc()
        except Exception as exc:  # noqa: BLE001 - a bus outage must not end the edge's stream
            self.unpublished.inc()
            log.warning("could not publish track event %s to the results bus: %s", event.id, exc)
        return 0

    @asynccontextmanager
    async def subscribe(self, stream_ids: Iterable[str], after_sequence: int = 0, *,
                        permits: Callable[[str], bool] | None = None, events: bool = False
                        ) -> AsyncIterator[Subscription]:
        """A subscription fed by an ordered JetStream consumer, from after `after_sequence` (0: new results).

        `permits` (authorization) filters what the subscriber may read, like the stream ids it named; `events`
        adds the streams' track events (one consumer, so results and events keep the bus's order).
        """
        nats = import_nats()
        api = nats.js.api
        subscription = Subscription(stream_ids, self.capacity, self.max_bytes, self._on_drop, permits,
                                    self.max_lag_s, events)
        subjects = sorted(results_subject(s) for s in subscription.stream_ids) or [f"{RESULTS_PREFIX}.>"]
        if events:
            subjects += sorted(tracks_subject(s) for s in subscription.stream_ids) or [f"{TRACKS_PREFIX}.>"]

        async def deliver(msg: Any) -> None:
            if self.keys is not None and not self.verified(msg, self.keys()):
                subscription.skip(msg.metadata.sequence.stream)
                return
            result: Message
            try:
                if msg.subject.startswith(TRACKS_PREFIX + "."):
                    result = event_from_cloudevent(json.loads(msg.data))
                else:
                    result = inference_pb2.InferenceResult()
                    result.ParseFromString(msg.data)
            except Exception:  # noqa: BLE001 - a foreign message on our subject: skip it, never crash
                log.warning("skipped a message on %s that is not an InferenceResult or a track event", msg.subject)
                subscription.skip(msg.metadata.sequence.stream)
                return
            if not subscription.wants_message(result):
                subscription.skip(msg.metadata.sequence.stream)
                return
            subscription.offer(msg.metadata.sequence.stream, result, len(msg.data))

        if after_sequence:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                        opt_start_seq=after_sequence + 1)
        else:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW)
        if len(subjects) > 1:
            config.filter_subjects = subjects
        try:
            sub = await self._js.subscribe(subjects[0], stream=STREAM_NAME, cb=deliver, ordered_consumer=True,
                                           config=config, idle_heartbeat=2.0,
                                           pending_bytes_limit=4 * self.max_bytes)
        except Exception as exc:  # noqa: BLE001
            raise BusError(f"could not read the results bus at {self.url}: {exc}") from exc
        if self._closed:
            subscription.close(self._close_reason)
        self._subscriptions[subscription] = sub
        try:
            yield subscription
        finally:
            self._subscriptions.pop(subscription, None)
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may be gone already; the consumer is ephemeral
                pass

    def verified(self, msg: Any, keys: ResultKeys) -> bool:
        """True if the message's signature verifies; otherwise counted by reason and logged (never raised)."""
        try:
            keys.verify(msg.subject, msg.headers, msg.data)
        except UnverifiedResultError as exc:
            self.unverified.labels(exc.reason).inc()
            self._unverified_seen[exc.reason] += 1
            # Logged with its running count; a flood is logged at powers of ten only.
            total = self._unverified_seen[exc.reason]
            if total < 10 or total in (100, 1000, 10_000) or total % 100_000 == 0:
                log.warning("not served (%d so far, %s): %s", total, exc.reason, exc)
            return False
        return True

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (at most `timeout_s`) until every subscription has received what the bus holds for it.

        Publishing already awaits each acknowledgement; this is for the delivery side: at shutdown the
        results of the drained frames must reach this replica's subscribers before their calls end.
        """
        if self._nc is None or not self._nc.is_connected:
            return
        deadline = asyncio.get_running_loop().time() + timeout_s
        for subscription, sub in list(self._subscriptions.items()):
            while asyncio.get_running_loop().time() < deadline:
                try:
                    info = await sub.consumer_info()
                except Exception as exc:  # noqa: BLE001 - an ordered consumer being recreated: try again
                    log.debug("consumer info: %s", exc)
                    info = None
                if info is not None and info.num_pending == 0 and sub.pending_msgs == 0 \
                        and subscription.last_sequence >= (info.delivered.stream_seq or 0):
                    break
                await asyncio.sleep(0.02)

    def close(self, reason: str = "") -> None:
        """End every subscription once its queue is read (server shutdown)."""
        self._closed = True
        self._close_reason = reason
        for subscription in self._subscriptions:
            subscription.close(reason)

    async def aclose(self) -> None:
        """Close the connection to the bus."""
        nc, self._nc = self._nc, None
        if nc is None:
            return
        try:
            if nc.is_connected:
                await nc.drain()
                return
        except Exception as exc:  # noqa: BLE001 - closing below is what matters
            log.debug("results bus drain: %s", exc)
        try:
            await nc.close()
        except Exception as exc:  # noqa: BLE001 - the connection is gone already (bus down): nothing to release
            log.debug("results bus close: %s", exc)
