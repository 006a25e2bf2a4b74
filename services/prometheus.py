"""Prometheus plumbing shared by the cloud and the edge: registries and a /metrics-only HTTP endpoint.

Every registry gets process_* series (CPU, memory, file descriptors), python_info and a
`splitinfer_build_info{version, component}` series; the exposition leaves out the `*_created` series
(timestamps of when each counter was made, which only cost scrape size). The endpoint runs on the
event loop of the service (no thread) and answers GET/HEAD /metrics only: every other path is a 404.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from splitinfer import __version__
from splitinfer.errors import ConfigError
from splitinfer.services.http_endpoint import HttpEndpoint, Request, send

log = logging.getLogger("splitinfer.metrics")


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
    return generate_latest(_WithoutCreated(registry))


class MetricsHttpServer(HttpEndpoint):
    """GET (or HEAD) /metrics answers the exposition, other paths 404, other methods 405.

    With `token_file`, /metrics asks for `Authorization: Bearer <the file's token>` (401 without it), as
    Prometheus sends it from its scrape configuration; the file is read at start (a bad one is an error then)
    and again on each scrape, so a rotated Secret applies without a restart.
    """

    def __init__(self, render: Callable[[], bytes], host: str, port: int, *, token_file: Path | None = None) -> None:
        super().__init__(host, port)
        self._render = render  # the exposition, e.g. CloudMetrics.exposition
        self._token_file = token_file

    async def start(self) -> None:
        if self._token_file is not None:
            self._token()
        await super().start()

    def _token(self) -> bytes:
        assert self._token_file is not None
        try:
            token = self._token_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"--metrics-token-file {self._token_file} cannot be read ({exc.strerror or exc}).") \
                from exc
        if not token or any(ch in token for ch in b" \t\r\n"):
            raise ConfigError(f"--metrics-token-file {self._token_file} must hold one token on one line "
                              "(`splitinfer token` makes one).")
        return token

    def _authorized(self, request: Request) -> bool:
        if self._token_file is None:
            return True
        try:
            expected = b"Bearer " + self._token()
        except ConfigError as exc:  # the Secret went bad after start: refuse rather than serve openly
            log.error("%s", exc)
            return False
        return hmac.compare_digest(request.headers.get(b"authorization", b""), expected)

    async def answer(self, request: Request, writer: asyncio.StreamWriter) -> None:
        if not self._authorized(request):
            await send(writer, b"401 Unauthorized", b"/metrics needs a bearer token (--metrics-token-file)\n",
                       extra=b'WWW-Authenticate: Bearer realm="metrics"\r\n')
        elif request.method not in (b"GET", b"HEAD"):
            await send(writer, b"405 Method Not Allowed", b"only GET /metrics\n", extra=b"Allow: GET, HEAD\r\n")
        elif request.path != b"/metrics":
            await send(writer, b"404 Not Found", b"not found: the metrics are at /metrics\n")
        else:
            await send(writer, b"200 OK", self._render(), content_type=CONTENT_TYPE_LATEST.encode(),
                       head_only=request.method == b"HEAD")
