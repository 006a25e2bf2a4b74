"""The live page (#12 item 5): a real edge streams to a real cloud; headless Chromium loads the page, the
picture updates, and the screenshot it takes has real content. Also the page's endpoints over plain HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from splitinfer.services.edge.app import EdgeSettings, build_pipeline, run_edge
from splitinfer.services.edge.views import ViewRequest, build_views
from tests.services.conftest import MODEL, PLAINTEXT, run, running_cloud

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "live-page.png"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1240,420")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is absent (Debian: apt-get install -y chromium): the browser test needs it")


async def _get(url: str) -> tuple[int, str, bytes]:
    def fetch():
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()
    return await asyncio.get_running_loop().run_in_executor(None, fetch)


async def _stream_with_page(engine, model, video, frames: int, visit, **cloud_config) -> tuple:
    """An edge (file read live, at its 10 fps) with the live page, while `visit(server)` runs against it."""
    async with running_cloud(engine, **cloud_config) as cloud:
        settings = EdgeSettings(security=PLAINTEXT, source=str(video), cloud=f"127.0.0.1:{cloud.port}", stream_id="live-page",
                                model=MODEL, mode="live", frames=frames, window=2)
        views = build_views(ViewRequest(title="splitinfer edge (test)", preview_port=0))
        server = views.servers[0]
        pipeline = await asyncio.get_running_loop().run_in_executor(None, build_pipeline, settings, model)
        ready = asyncio.Event()
        edge = asyncio.create_task(run_edge(settings, views.sinks, pipeline=pipeline, servers=views.servers,
                                            on_streamer=views.on_streamer, on_started=ready.set))
        await asyncio.wait_for(ready.wait(), 60)
        while server.frames.jpeg is None and not edge.done():
            await asyncio.sleep(0.1)
        seen = await visit(server)
        stats = await edge
        return seen, stats, server


def test_the_page_endpoints_answer_and_only_them(engine, model, video) -> None:
    async def visit(server):
        base = server.url
        page = await _get(base)
        stats = await _get(base + "stats.json")
        frame = await _get(base + "frame.jpg")
        missing = await _get(base + "nothing")
        return page, stats, frame, missing, server.host

    (page, stats, frame, missing, host), result, _ = run(_stream_with_page(engine, model, video, 12, visit))
    assert host == "127.0.0.1"  # loopback unless asked
    assert page[0] == 200 and page[1].startswith("text/html") and b"/stream.mjpg" in page[2]
    report = json.loads(stats[2])
    assert stats[0] == 200 and report["now"]["frames"] >= 1
    assert {"fps", "kbit_s", "bits_per_element", "latency_ms", "detections"} <= set(report["now"])
    assert frame[0] == 200 and frame[1] == "image/jpeg" and frame[2][:2] == b"\xff\xd8"
    assert missing[0] == 404
    assert result.results == 12


async def _chromium(browser: str, url: str, *flags: str) -> tuple[bytes, str]:
    """Headless Chromium on `url` with `flags`: the screenshot (b"" unless asked, or none written) and its output."""
    profile = tempfile.mkdtemp(prefix="splitinfer-chromium-")
    shot = Path(profile) / "shot.png"
    command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *(f.format(shot=shot) for f in flags),
               "--timeout=6000", "--virtual-time-budget=6000", url]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    output, errors = await asyncio.wait_for(process.communicate(), 90)
    try:
        return shot.read_bytes() if shot.exists() else b"", (output + errors).decode("utf-8", "replace")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
def test_headless_chromium_loads_the_page_and_the_picture_updates(engine, model, video) -> None:
    browser = chromium()

    async def visit(server):
        parts_before = server.parts_sent
        png, output = await _chromium(browser, server.url, "--screenshot={shot}")
        return png, server.parts_sent - parts_before, output[-2000:]

    (png, parts, log), _, server = run(_stream_with_page(engine, model, video, 120, visit), timeout=240)
    assert png, f"Chromium wrote no screenshot:\n{log}"
    import cv2

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] >= 1000
    # The picture area holds a real frame (many distinct colours), not a blank or an empty box.
    picture = image[60:420, 12:650]
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 500, "the picture area of the screenshot is blank"
    assert float(picture.std()) > 20.0
    assert parts >= 2, f"the browser took {parts} MJPEG parts: the picture did not update\n{log}"
    if os.environ.get("SPLITINFER_WRITE_SCREENSHOT"):  # refresh docs/live-page.png (README)
        cv2.imwrite(str(SCREENSHOT), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])


# The cloud's zones for the live page's stream, in source-image pixels (the shared video is 768x432): a zone over
# the lower picture, where the people in the first frames stand, and a line across it.
ZONES = """\
streams:
  live-page:
    zones:
      - name: floor
        polygon: [[40, 150], [728, 150], [728, 425], [40, 425]]
    lines:
      - name: middle
        points: [[384, 425], [384, 150]]
"""


def _magenta(image: np.ndarray) -> np.ndarray:
    """Pixels of the zones' colour (BGR magenta, which no class colour is: they have every channel >= 64)."""
    blue, green, red = (image[..., i].astype(int) for i in range(3))
    return (blue > 180) & (red > 180) & (green < 90)


def test_the_cloud_sends_the_streams_zones_and_each_result_its_counts_to_the_live_page(
        engine, model, video, tmp_path: Path) -> None:
    pytest.importorskip("supervision", reason="zones need the tracks extra: pip install -e '.[tracks]'")
    zones = tmp_path / "zones.yaml"
    zones.write_text(ZONES)

    async def visit(server):
        while server.live.frames < 8:
            await asyncio.sleep(0.1)
        return json.loads((await _get(server.url + "stats.json"))[2]), (await _get(server.url + "frame.jpg"))[2]

    (report, jpeg), _, _ = run(_stream_with_page(engine, model, video, 12, visit, zones=zones))
    counts = {zone["name"]: zone for zone in report["now"]["zones"]}
    assert counts.keys() == {"floor", "middle"}
    assert counts["floor"]["kind"] == "zone" and counts["floor"]["inside"] >= 1  # someone stands on the floor
    assert counts["middle"]["kind"] == "line" and {"forward", "backward"} <= counts["middle"].keys()
    import cv2

    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    magenta = _magenta(picture)
    assert magenta[150:426, 384].mean() > 0.5, "the line is not drawn where the zones file puts it"
    assert magenta[150, 60:700].mean() > 0.5, "the zone's top edge is not drawn where the zones file puts it"


@pytest.mark.slow
def test_headless_chromium_shows_the_clouds_zones_and_lines_with_live_counts(engine, model, video,
                                                                             tmp_path: Path) -> None:
    pytest.importorskip("supervision", reason="zones need the tracks extra: pip install -e '.[tracks]'")
    browser = chromium()
    zones = tmp_path / "zones.yaml"
    zones.write_text(ZONES)

    async def visit(server):
        png, log = await _chromium(browser, server.url, "--screenshot={shot}")
        _, dom = await _chromium(browser, server.url, "--dump-dom")
        return png, dom, log[-2000:]

    (png, dom, log), _, _ = run(_stream_with_page(engine, model, video, 120, visit, zones=zones), timeout=240)
    assert png, f"Chromium wrote no screenshot:\n{log}"
    import cv2

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    picture = image[60:420, 12:650]
    # The picture (768x432 shown 640 wide) has the zone's outline and the line in the zones' colour.
    assert _magenta(picture).sum() > 1500, "the zones and lines are not drawn on the live picture"
    # The page's counts panel reads the cloud's live counts.
    assert re.search(r'id="zones">floor: [0-9]+ inside \| middle: [0-9]+ fwd, [0-9]+ back<', dom), dom[-3000:]


def test_zones_the_edge_cannot_draw_are_left_out_and_the_rest_are_drawn(caplog) -> None:
    from splitinfer.services.edge.client import drawable_zones
    from splitinfer.services.edge.output import draw_zones
    from splitinfer.v1 import inference_pb2

    zone, line = inference_pb2.ZONE_SHAPE_KIND_ZONE, inference_pb2.ZONE_SHAPE_KIND_LINE
    good = [inference_pb2.ZoneShape(name="door", kind=zone, coordinates=[10, 10, 100, 10, 100, 80]),
            inference_pb2.ZoneShape(name="entrance", kind=line, coordinates=[0, 120, 200, 120])]
    hostile = [inference_pb2.ZoneShape(name="odd", kind=zone, coordinates=[1, 2, 3, 4, 5]),
               inference_pb2.ZoneShape(name="nan", kind=zone, coordinates=[1, 2, float("nan"), 4, 5, 6]),
               inference_pb2.ZoneShape(name="huge", kind=line, coordinates=[0, 0, 1e30, 5]),
               inference_pb2.ZoneShape(name="many", kind=zone, coordinates=[1.0] * 2_000_000),
               inference_pb2.ZoneShape(name="point", kind=line, coordinates=[1, 1])]
    kept = drawable_zones(hostile[:2] + good + hostile[2:])
    assert [shape.name for shape in kept] == ["door", "entrance"]
    assert caplog.text.count("cannot draw") == len(hostile)
    canvas = np.zeros((160, 240, 3), np.uint8)
    counts = [inference_pb2.ZoneCount(name="door", kind=zone, inside=2),
              inference_pb2.ZoneCount(name="entrance", kind=line, forward=3, backward=1)]
    draw_zones(canvas, kept, counts)
    assert canvas[120, 150].tolist() == [255, 0, 255] and canvas[45, 100].tolist() == [255, 0, 255]
