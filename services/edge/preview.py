"""The live page of an edge: the annotated picture (MJPEG) and live charts, served on the edge's event loop.

`splitinfer edge --preview-port PORT` (and `splitinfer demo --preview`) serve, on loopback unless
--preview-host says otherwise:

    /             the page (HTML + a little JavaScript, no external files)
    /stream.mjpg  the annotated picture as multipart/x-mixed-replace JPEGs (newest frame; no backlog)
    /frame.jpg    the newest annotated frame
    /stats.json   fps, kbit/s, bits/element, latency, detections per class, the zones' and lines' counts (the
              cloud's zones file, docs/TRACKS.md), and a per-second history

Standard library only. The sink encodes at most `max_fps` JPEGs per second; each viewer gets the newest
one when it is ready for it, so a slow viewer skips frames instead of queueing them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from splitinfer.services.edge.client import FrameOutcome
from splitinfer.services.http_endpoint import HttpEndpoint, Request, send
from splitinfer.services.edge.live import LiveStats
from splitinfer.services.edge.output import draw_detections

log = logging.getLogger("splitinfer.edge.preview")
BOUNDARY = b"splitinferframe"
_NO_CACHE = b"Cache-Control: no-cache\r\n"


class PreviewSink:
    """Keeps the newest annotated frame as a JPEG and wakes the viewers waiting for it."""

    def __init__(self, max_fps: float = 15.0, quality: int = 80) -> None:
        self.max_fps = max_fps
        self.quality = quality
        self.jpeg: bytes | None = None
        self.sequence = 0
        self._last = 0.0
        self._changed = asyncio.Condition()

    def __call__(self, outcome: FrameOutcome) -> None:
        import cv2

        now = time.monotonic()
        if self.jpeg is not None and now - self._last < 1.0 / self.max_fps:
            return
        ok, data = cv2.imencode(".jpg", draw_detections(outcome.frame.image, outcome),
                                [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        self._last = now
        self.jpeg = data.tobytes()
        self.sequence += 1
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def next_frame(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """The newest frame once its sequence is past `after` (or what there is after `timeout` seconds)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.sequence > after), timeout)
            except asyncio.TimeoutError:
                pass
            return self.sequence, self.jpeg


class PreviewServer(HttpEndpoint):
    """A small HTTP server for the live page; at most `max_viewers` picture streams at once."""

    def __init__(self, frames: PreviewSink, live: LiveStats, host: str = "127.0.0.1", port: int = 0, *,
                 title: str = "splitinfer edge", max_viewers: int = 8) -> None:
        super().__init__(host, port)
        self.frames = frames
        self.live = live
        self.title = title
        self.max_viewers = max_viewers
        self.viewers = 0
        self.parts_sent = 0  # JPEG parts written to /stream.mjpg viewers (the picture updating, counted)

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{'127.0.0.1' if self.host in ('', '0.0.0.0') else host}:{self.port}/"

    async def start(self) -> None:
        await super().start()
        log.info("live page at %s", self.url)

    async def answer(self, request: Request, writer: asyncio.StreamWriter) -> None:
        if request.method != b"GET":
            await send(writer, b"405 Method Not Allowed", b"only GET\n", extra=b"Allow: GET\r\n")
        elif request.path == b"/":
            await send(writer, b"200 OK", _page(self.title), content_type=b"text/html; charset=utf-8", extra=_NO_CACHE)
        elif request.path == b"/stats.json":
            await send(writer, b"200 OK", json.dumps(self.live.report()).encode(), content_type=b"application/json",
                       extra=_NO_CACHE)
        elif request.path == b"/frame.jpg":
            if self.frames.jpeg is None:
                await send(writer, b"503 Service Unavailable", b"no frame yet\n")
            else:
                await send(writer, b"200 OK", self.frames.jpeg, content_type=b"image/jpeg", extra=_NO_CACHE)
        elif request.path == b"/stream.mjpg":
            await self._stream(writer)
        else:
            await send(writer, b"404 Not Found", b"not found\n")

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        if self.viewers >= self.max_viewers:
            await send(writer, b"503 Service Unavailable", b"too many viewers\n")
            return
        self.viewers += 1
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=" + BOUNDARY
                         + b"\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n")
            sequence = 0
            while self.serving:
                sequence, jpeg = await self.frames.next_frame(sequence, timeout=1.0)
                if jpeg is None:
                    continue
                writer.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                             + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                await asyncio.wait_for(writer.drain(), 10)  # a viewer that stops reading is let go
                self.parts_sent += 1
        finally:
            self.viewers -= 1


def _page(title: str) -> bytes:
    return _PAGE.replace("{{title}}", _escape(title)).encode()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee}
header{padding:8px 14px;background:#222;font-size:15px}
main{display:flex;flex-wrap:wrap;gap:12px;padding:12px}
#picture{max-width:100%;width:640px;background:#000;border:1px solid #333}
.charts{display:grid;grid-template-columns:repeat(2,270px);gap:8px;align-content:start}
.chart{background:#1b1b1b;border:1px solid #333;padding:4px}
.chart h3{margin:0 0 2px 0;font-size:12px;font-weight:normal;color:#aaa}
.value{font-size:18px;color:#fff}
canvas{display:block}
</style></head>
<body>
<header>{{title}} &mdash; <span id="status">waiting for frames</span></header>
<main>
<img id="picture" src="/stream.mjpg" alt="annotated live picture">
<div class="charts">
<div class="chart"><h3>frames/s <span class="value" id="v-fps">-</span></h3><canvas id="c-fps" width="260" height="72"></canvas></div>
<div class="chart"><h3>kbit/s <span class="value" id="v-kbit_s">-</span></h3><canvas id="c-kbit_s" width="260" height="72"></canvas></div>
<div class="chart"><h3>bits/element <span class="value" id="v-bits_per_element">-</span></h3><canvas id="c-bits_per_element" width="260" height="72"></canvas></div>
<div class="chart"><h3>latency ms <span class="value" id="v-latency_ms">-</span></h3><canvas id="c-latency_ms" width="260" height="72"></canvas></div>
<div class="chart" style="grid-column:span 2"><h3>detections per class (since start)</h3><canvas id="c-classes" width="540" height="110"></canvas></div>
<div class="chart" style="grid-column:span 2"><h3>zones and lines (the cloud's counts)</h3><div class="value" id="zones">none</div></div>
</div>
</main>
<script>
const KEYS = ["fps", "kbit_s", "bits_per_element", "latency_ms"];
const COLOURS = {fps: "#4fc3f7", kbit_s: "#aed581", bits_per_element: "#ffb74d", latency_ms: "#f06292"};
let updates = 0;
function line(id, points, colour) {
  const c = document.getElementById(id), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (points.length < 1) return;
  const top = Math.max(...points) * 1.15 || 1;
  g.strokeStyle = "#333"; g.beginPath(); g.moveTo(0, c.height - 1); g.lineTo(c.width, c.height - 1); g.stroke();
  g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
  points.forEach((v, i) => {
    const x = points.length < 2 ? c.width : i * c.width / (points.length - 1);
    const y = c.height - 2 - v / top * (c.height - 6);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
  g.fillStyle = "#888"; g.font = "10px sans-serif"; g.fillText(top.toPrecision(3), 2, 10);
}
function bars(id, counts) {
  const c = document.getElementById(id), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const entries = Object.entries(counts).slice(0, 10);
  if (!entries.length) return;
  const top = Math.max(...entries.map(e => e[1])), w = Math.min(90, c.width / entries.length);
  entries.forEach(([name, n], i) => {
    const h = n / top * (c.height - 26);
    g.fillStyle = "#7986cb"; g.fillRect(i * w + 4, c.height - 14 - h, w - 8, h);
    g.fillStyle = "#ddd"; g.font = "10px sans-serif";
    g.fillText(name.slice(0, 12), i * w + 4, c.height - 2); g.fillText(n, i * w + 4, c.height - 17 - h);
  });
}
async function refresh() {
  try {
    const r = await fetch("/stats.json", {cache: "no-store"});
    const s = await r.json();
    updates += 1;
    const history = s.history.concat([s.now]);
    for (const k of KEYS) {
      document.getElementById("v-" + k).textContent = Number(s.now[k]).toFixed(k === "bits_per_element" ? 3 : 1);
      line("c-" + k, history.map(p => p[k]), COLOURS[k]);
    }
    bars("c-classes", s.detections_total);
    document.getElementById("zones").textContent = s.now.zones.length ? s.now.zones.map(z => z.kind === "line"
      ? z.name + ": " + z.forward + " fwd, " + z.backward + " back" : z.name + ": " + z.inside + " inside").join(" | ")
      : "none";
    document.getElementById("status").textContent =
      s.now.frames + " frames answered, " + s.now.errors + " errors (update " + updates + ")";
    document.body.dataset.updates = updates;
    document.body.dataset.frames = s.now.frames;
  } catch (e) {
    document.getElementById("status").textContent = "no answer from the edge: " + e;
  }
}
refresh();
setInterval(refresh, 500);
</script>
</body></html>
"""
