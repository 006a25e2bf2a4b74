"""Prometheus metrics of the cloud service, served over HTTP from the event loop (no extra thread).

Each server owns its registry, so several servers in one process (tests, the demo) do not collide.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BPE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0)
_MAX_REQUEST_BYTES = 8192


class CloudMetrics:
    """Frames, bytes, bits per element, stage latencies, open streams, dropped results, refused input.

    Every label value is server-defined: model names, status code names, refusal reasons and the stage
    names of splitinfer.services.stages.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("splitinfer_frames", "Frames answered, by outcome (ok or a status code name).",
                              ["model", "outcome"], registry=r)
        self.payload_bytes = Counter("splitinfer_payload_bytes", "Coded tensor bytes received.", ["model"],
                                     registry=r)
        self.elements = Counter("splitinfer_elements", "Tensor elements received.", ["model"], registry=r)
        self.bits_per_element = Histogram("splitinfer_bits_per_element", "Coded bits per tensor element, per frame.",
                                          ["model"], buckets=_BPE_BUCKETS, registry=r)
        self.stage_seconds = Histogram("splitinfer_stage_seconds", "Seconds per pipeline stage and frame.",
                                       ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.open_streams = Gauge("splitinfer_open_streams", "Infer streams open now.", registry=r)
        self.subscribers = Gauge("splitinfer_subscribers", "Subscribe streams open now.", registry=r)
        self.dropped_results = Counter("splitinfer_dropped_results",
                                       "Results dropped because a subscriber read too slowly.", registry=r)
        self.rejected_streams = Counter("splitinfer_rejected_streams", "Infer streams refused, by reason.",
                                        ["reason"], registry=r)
        self.ignored_stage_entries = Counter(
            "splitinfer_ignored_stage_entries", "edge_stage_seconds entries dropped: an unknown stage name or a value "
            "that is not a time (they never become label values nor reach results).", registry=r)
        self.idle_streams = Counter("splitinfer_idle_streams", "Infer streams ended after --stream-idle-timeout "
                                    "seconds without a frame.", registry=r)
        self.oversized_results = Counter("splitinfer_oversized_results", "Results replaced by an in-band error because "
                                         "they would exceed --max-message-bytes.", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsHttpServer:
    """A minimal HTTP endpoint that answers every GET with the Prometheus text exposition."""

    def __init__(self, metrics: CloudMetrics, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            if len(head) > _MAX_REQUEST_BYTES or not head.startswith(b"GET "):
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                body = self._metrics.exposition()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: " + CONTENT_TYPE_LATEST.encode()
                    + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
                )
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
