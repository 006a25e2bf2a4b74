"""The results bus: every cloud replica publishes each result to NATS JetStream, and serves Subscribe from it.

With `--nats URL` the bus is the source of truth: a result is published (and acknowledged by JetStream)
before the cloud answers the frame, so a result an edge has seen is on the bus; `Subscribe` on any replica
reads the bus from a position (the JetStream stream sequence), so subscribers see every replica's streams
and resume after a restart, GOAWAY or max connection age with no gap and no duplicate.

Layout on the bus (docs/RESULTS_SCHEMA.md):
- JetStream stream `SPLITINFER_RESULTS` (limits retention: max age, max bytes; file storage; duplicate window)
  holding subjects `splitinfer.results.<token>` (protobuf InferenceResult, header Content-Type) and, with
  `--nats-json`, `splitinfer.events.<token>` (CloudEvents 1.0 structured JSON).
- <token> is the stream id with every byte outside [A-Za-z0-9_-] written as %XX (upper-case hex): a stream id
  may hold '/', '.', ':' and '@', but a NATS subject token may not hold '.', and MQTT maps '/' to '.', so
  `site-a/cam-1` becomes `site-a%2Fcam-1` (one token; `stream_id_from_token` reverses it).
- Nats-Msg-Id `<stream_id>/<frame_id>@<capture ns>`: a frame resent after a reconnect, to this or another
  replica, is stored once; the capture time tells a restarted edge's frame 0 from the previous run's frame 0.

nats-py is an optional dependency (`pip install 'splitinfer[bus]'`); it is imported on first use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from splitinfer.errors import BusError
from splitinfer.results import PROTOBUF_CONTENT_TYPE, result_id, to_cloudevent
from splitinfer.services.cloud.subscribers import Subscription
from splitinfer.v1 import inference_pb2

log = logging.getLogger("splitinfer.cloud.bus")

STREAM_NAME = "SPLITINFER_RESULTS"
RESULTS_PREFIX = "splitinfer.results"
EVENTS_PREFIX = "splitinfer.events"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
_PLAIN = re.compile(r"[A-Za-z0-9_-]")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def subject_token(stream_id: str) -> str:
    """The stream id as one NATS subject token (and MQTT topic level): bytes outside [A-Za-z0-9_-] as %XX."""
    return "".join(ch if _PLAIN.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode()) for ch in stream_id)


def stream_id_from_token(token: str) -> str:
    """The stream id back from its subject token."""
    return _ESCAPE.sub(lambda m: bytes.fromhex(m.group(1)).decode("latin-1"), token).encode("latin-1").decode()


def results_subject(stream_id: str) -> str:
    return f"{RESULTS_PREFIX}.{subject_token(stream_id)}"


def dedup_id(result: inference_pb2.InferenceResult) -> str:
    """Nats-Msg-Id of a result: its id plus the capture time (see the module docstring)."""
    return f"{result_id(result)}@{result.capture.capture_time.ToNanoseconds()}"


def _import_nats() -> Any:
    try:
        import nats
        import nats.js.api
    except ImportError as exc:
        raise BusError("--nats needs the NATS client: pip install 'splitinfer[bus]' (nats-py).") from exc
    return nats


class ResultBus:
    """Publisher and subscriber side of the bus for one cloud process; same interface as SubscriberHub."""

    def __init__(self, url: str, *, capacity: int, max_bytes: int, max_age_s: float = 24 * 3600.0,
                 stream_max_bytes: int = 1024**3, duplicate_window_s: float = 120.0, publish_json: bool = False,
                 source: str | None = None, publish_timeout_s: float = 5.0,
                 on_drop: Callable[[int], None] | None = None, registry: Any = None) -> None:
        self.url = url
        self.capacity = capacity
        self.max_bytes = max_bytes
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
        self._nc: Any = None
        self._js: Any = None
        # Each subscription and its JetStream consumer subscription.
        self._subscriptions: dict[Subscription, Any] = {}
        self._closed = False
        self._close_reason = ""

    def __len__(self) -> int:
        return len(self._subscriptions)

    async def start(self, connect_timeout_s: float = 30.0) -> None:
        """Connect (retrying for up to `connect_timeout_s`) and make sure the JetStream stream has our limits."""
        nats = _import_nats()
        api = nats.js.api
        try:
            # Reconnects are unlimited once connected; the first connection gets connect_timeout_s in all.
            self._nc = await asyncio.wait_for(nats.connect(
                self.url, name="splitinfer-cloud", connect_timeout=2, allow_reconnect=True, max_reconnect_attempts=-1,
                reconnect_time_wait=0.5, error_cb=self._log_error), connect_timeout_s)
        except Exception as exc:  # noqa: BLE001 - nats raises several unrelated types for "cannot connect"
            reason = str(exc) or f"no connection within {connect_timeout_s:g} s"
            raise BusError(f"could not reach the results bus at {self.url}: {reason}; check that nats-server runs "
                           "there with JetStream (-js), or leave --nats unset to keep results in this process."
                           ) from exc
        self._js = self._nc.jetstream(timeout=self.publish_timeout_s)
        config = api.StreamConfig(
            name=STREAM_NAME, subjects=[f"{RESULTS_PREFIX}.>", f"{EVENTS_PREFIX}.>"],
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
            raise BusError(f"the bus at {self.url} refused the JetStream stream {STREAM_NAME}: {exc}; is JetStream "
                           "enabled (nats-server -js)?") from exc

    @staticmethod
    async def _log_error(exc: Exception) -> None:
        log.warning("results bus: %s", exc)

    async def publish(self, result: inference_pb2.InferenceResult) -> int:
        """Store the result on the bus and wait for JetStream's acknowledgement; returns 0 (nothing dropped)."""
        msg_id = dedup_id(result)
        if self._nc is None or not self._nc.is_connected:
            # Waiting out the publish timeout per frame would stall every stream while the bus is away.
            self.unpublished.inc()
            log.warning("results bus at %s is not connected: %s was not published", self.url, msg_id)
            return 0
        try:
            ack = await self._js.publish(results_subject(result.stream_id), result.SerializeToString(),
                                         headers={"Nats-Msg-Id": msg_id, "Content-Type": PROTOBUF_CONTENT_TYPE})
            if ack.duplicate:
                self.duplicates.inc()
            if self.publish_json:
                event = to_cloudevent(result, self.source)
                event["id"] = msg_id
                await self._js.publish(f"{EVENTS_PREFIX}.{subject_token(result.stream_id)}",
                                       json.dumps(event, separators=(",", ":")).encode(),
                                       headers={"Nats-Msg-Id": msg_id + "/ce",
                                                "Content-Type": CLOUDEVENTS_CONTENT_TYPE})
        except Exception as exc:  # noqa: BLE001 - a bus outage must not end the edge's stream
            self.unpublished.inc()
            log.warning("could not publish %s to the results bus: %s", msg_id, exc)
        return 0

    @asynccontextmanager
    async def subscribe(self, stream_ids: Iterable[str], after_sequence: int = 0, *,
                        permits: Callable[[str], bool] | None = None) -> AsyncIterator[Subscription]:
        """A subscription fed by an ordered JetStream consumer, from after `after_sequence` (0: new results).

        `permits` (authorization) filters what the subscriber may read, like the stream ids it named.
        """
        nats = _import_nats()
        api = nats.js.api
        subscription = Subscription(stream_ids, self.capacity, self.max_bytes, self._on_drop, permits)
        subjects = sorted(results_subject(s) for s in subscription.stream_ids) or [f"{RESULTS_PREFIX}.>"]

        async def deliver(msg: Any) -> None:
            result = inference_pb2.InferenceResult()
            try:
                result.ParseFromString(msg.data)
            except Exception:  # noqa: BLE001 - a foreign message on our subject: skip it, never crash
                log.warning("skipped a message on %s that is not an InferenceResult", msg.subject)
                return
            if not subscription.wants(result.stream_id):
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
