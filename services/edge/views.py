"""What an edge shows besides its JSON lines: annotated video file, window or live page, /metrics.

`splitinfer edge` and `splitinfer demo` describe what they want in a ViewRequest (checked before the
model loads) and get the sinks, the servers to run on the edge's event loop and what to close after.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from splitinfer.errors import ConfigError
from splitinfer.services.edge.output import AnnotatedVideoSink, WindowSink, display_plan

log = logging.getLogger("splitinfer.edge")


@dataclass(frozen=True)
class ViewRequest:
    """The views asked for; `display` is resolved to "window" or "browser" (or an error) when made."""

    title: str
    annotate: str | None = None
    display: str | None = None  # None, "window" (GUI OpenCV) or "browser" (the live page in the desktop's browser)
    preview_port: int = -1
    preview_host: str = "127.0.0.1"
    metrics_port: int = -1
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        for name in ("preview_port", "metrics_port"):
            value = getattr(self, name)
            if not -1 <= value <= 65535:
                raise ConfigError(f"--{name.replace('_', '-')} must be -1 (off), 0 (a free port) or a port up to "
                                  f"65535, got {value}.")

    @classmethod
    def from_args(cls, args: argparse.Namespace, title: str, *, preview: bool | None = None) -> ViewRequest:
        """From parsed flags; --display is checked now (ConfigError saying why there is no display)."""
        for name in ("camera_width", "camera_height", "camera_fps", "source_timeout"):
            value = getattr(args, name, None)
            if value is not None and value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative, got {value}.")
        preview_port = getattr(args, "preview_port", -1)
        if preview and preview_port < 0:
            preview_port = 0
        return cls(title=title, annotate=getattr(args, "annotate", None),
                   display=display_plan() if getattr(args, "display", False) else None,
                   preview_port=preview_port, preview_host=getattr(args, "preview_host", "127.0.0.1"),
                   metrics_port=getattr(args, "metrics_port", -1),
                   metrics_host=getattr(args, "metrics_host", "127.0.0.1"))


@dataclass
class Views:
    """Sinks and servers of one edge run, and the streamer once it exists."""

    sinks: list = field(default_factory=list)
    servers: list = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    streamers: list = field(default_factory=list)
    watchers: list[Callable[[Any], None]] = field(default_factory=list)
    open_page: Any = None  # the preview server whose page opens in the browser

    def on_streamer(self, streamer: Any) -> None:
        self.streamers.append(streamer)
        for watch in self.watchers:
            watch(streamer)

    def on_started(self) -> None:
        for server in self.servers:
            url = getattr(server, "url", None)
            if url:
                log.info("live page: %s", url)
        if self.open_page is not None:
            asyncio.get_running_loop().run_in_executor(None, webbrowser.open, self.open_page.url)

    def close(self) -> None:
        for close in self.closers:
            close()

    @property
    def source_fps(self) -> float | None:
        return self.streamers[0].grabber.fps if self.streamers else None


def build_views(request: ViewRequest) -> Views:
    """The sinks and servers a request asks for."""
    from splitinfer.services.edge.live import LiveStats

    views = Views()
    live = LiveStats()
    views.sinks.append(live)
    if request.annotate:
        video = AnnotatedVideoSink(request.annotate, fps=lambda: views.source_fps)
        views.sinks.append(video)
        views.closers.append(video.close)
    if request.display == "window":
        window = WindowSink(request.title)
        views.sinks.append(window)
        views.closers.append(window.close)
    if request.preview_port >= 0 or request.display == "browser":
        from splitinfer.services.edge.preview import PreviewServer, PreviewSink

        frames = PreviewSink()
        server = PreviewServer(frames, live, request.preview_host, max(request.preview_port, 0), title=request.title)
        views.sinks.append(frames)
        views.servers.append(server)
        if request.display == "browser":
            views.open_page = server
    if request.metrics_port >= 0:
        from splitinfer.services.edge.metrics import EdgeMetrics
        from splitinfer.services.prometheus import MetricsHttpServer

        metrics = EdgeMetrics(live)
        views.sinks.append(metrics)
        views.watchers.append(metrics.watch)
        views.servers.append(MetricsHttpServer(metrics.exposition, request.metrics_host, request.metrics_port))
    return views
