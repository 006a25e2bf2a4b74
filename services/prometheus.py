"""Prometheus plumbing shared by the cloud and the edge: registries and a /metrics-only HTTP endpoint.

Every registry gets process_* series (CPU, memory, file descriptors), python_info and a
`splitinfer_build_info{version, component}` series; the exposition leaves out the `*_created` series
(timestamps of when each counter was made, which only cost scrape size). The endpoint runs on the
event loop of the service (no thread) and answers GET/HEAD /metrics only: every other path is a 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from splitinfer import __version__

_MAX_REQUEST_BYTES = 8192


def new_registry(component: str) -> CollectorRegistry:
    """A registry with process_*, python_info and splitinfer_build_info for `component` (cloud, edge)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    build = Gauge("splitinfer_build_info", "The splitinfer version and component of this process (always 1).",
                  ["version", "component"], registry=registry)
    build.labels(__version__, component).set(1)
    return registry


class _WithoutCreated:
    """A view of a registry whose samples leave out the `*_created` series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            kept = [s for s in metric.samples if not s.name.endswith("_created")]
            if len(kept) != len(metric.samples):
                metric.samples = kept
            yield metric


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of a registry, without `*_created` series."""
    return generate_latest(_WithoutCreated(registry))  # type: ignore[arg-type]


class MetricsHttpServer:
    """A minimal HTTP endpoint: GET (or HEAD) /metrics answers the exposition, other paths 404, other methods 405."""

    def __init__(self, render: Callable[[], bytes], host: str, port: int) -> None:
        self._render = render  # the exposition, e.g. CloudMetrics.exposition
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

    def _answer(self, head: bytes) -> bytes:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(head) > _MAX_REQUEST_BYTES or len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _response(b"400 Bad Request", b"bad request\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _response(b"405 Method Not Allowed", b"only GET /metrics\n", extra=b"Allow: GET, HEAD\r\n")
        if target != b"/metrics":
            return _response(b"404 Not Found", b"not found: the metrics are at /metrics\n")
        body = self._render()
        return _response(b"200 OK", body, content_type=CONTENT_TYPE_LATEST.encode(), head_only=method == b"HEAD")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            writer.write(self._answer(head))
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


def _response(status: bytes, body: bytes, *, content_type: bytes = b"text/plain; charset=utf-8", extra: bytes = b"",
              head_only: bool = False) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"Connection: close\r\n\r\n" + (b"" if head_only else body))
