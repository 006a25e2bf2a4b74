"""The zones file: what it means (zones, lines, directions) and how a hostile or broken file is refused."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import pytest

from splitinfer.reloading import ReloadingFile
from splitinfer.services.cloud.zones import (
    MAX_FILE_BYTES,
    MAX_SHAPES,
    MAX_VERTICES,
    Line,
    ZonesFileError,
    load_zones,
    parse_zones,
)

GOOD = """\
streams:
  site-a/cam-1:
    zones:
      - name: door
        polygon: [[100, 200], [400, 200], [400, 480], [100, 480]]
        classes: [person]
    lines:
      - name: entrance
        points: [[0, 300], [640, 300]]
"""


def test_a_good_file_gives_each_stream_its_zones_and_lines_and_other_streams_none() -> None:
    config = parse_zones(GOOD)
    cam = config.for_stream("site-a/cam-1")
    assert [z.name for z in cam.zones] == ["door"] and [line.name for line in cam.lines] == ["entrance"]
    assert cam.zones[0].classes == {"person"}
    assert cam.zones[0].contains((250, 300)) and not cam.zones[0].contains((50, 300))
    assert config.for_stream("cam-2").zones == () and config.for_stream("cam-2").lines == ()
    assert parse_zones("").streams == {} and parse_zones("streams: {}").streams == {}


def test_json_is_accepted_too() -> None:
    config = parse_zones('{"streams": {"cam": {"lines": [{"name": "l", "points": [[0, 1], [5, 1]]}]}}}')
    assert config.for_stream("cam").lines[0].a == (0.0, 1.0)


def test_a_line_crossed_downward_from_left_to_right_is_forward_and_the_way_back_backward() -> None:
    line = Line("entrance", (0, 300), (640, 300))  # drawn left to right: its right, on screen, is below it
    assert line.crossing((320, 250), (320, 350)) == "forward"
    assert line.crossing((320, 350), (320, 250)) == "backward"
    assert line.crossing((320, 250), (330, 260)) is None  # stays above
    assert line.crossing((700, 250), (700, 350)) is None  # beside the segment, across its extension
    assert line.crossing((320, 300), (320, 350)) is None  # starting on the line is not a crossing


@pytest.mark.parametrize("text, line, reason", [
    ("streams:\n  cam:\n    zones:\n      - name: z\n        polygon: [[0, 0], [.nan, 0], [5, 5]]\n", 5,
     "not a finite number"),
    ("streams:\n  cam:\n    zones:\n      - name: z\n        polygon: [[0, 0], [1e9, 0], [5, 5]]\n", 5,
     "not a finite number within 0..8192"),
    ("streams:\n  cam:\n    zones:\n      - name: z\n        polygon: [[0, 0], [-1, 0], [5, 5]]\n", 5,
     "within 0..8192"),
    ("streams:\n  cam:\n    zones:\n      - name: z\n        polygon: [[0, 0], [10, 10], [10, 0], [0, 10]]\n", 5,
     "intersects itself"),
    ("streams:\n  cam:\n    zones:\n      - name: z\n        polygon: [[0, 0], [10, 0]]\n", 5,
     "a polygon needs at least 3"),
    ("streams:\n  cam:\n    zones:\n      - name: z\n        polygon: [[0, 0], [5, 5], [10, 10]]\n", 5,
     "area below one pixel"),
    ("streams:\n  cam:\n    lines:\n      - name: l\n        points: [[3, 3], [3, 3]]\n", 5, "two distinct points"),
    ("streams:\n  cam:\n    lines:\n      - name: l\n        points: [[1, 2], [3]]\n", 5, "must be [x, y]"),
    ("streams:\n  cam:\n    lines:\n      - points: [[1, 2], [3, 4]]\n", 4, "needs a name"),
    ("streams:\n  cam:\n    zones:\n      - name: z\n        polygon: [[0, 0], [9, 0], [9, 9]]\n"
     "    lines:\n      - name: z\n        points: [[1, 2], [3, 4]]\n", 7, "used twice"),
    ("streams:\n  cam:\n    lines:\n      - name: l\n        points: [[1, 2], [3, 4]]\n        colour: red\n", 6,
     "unknown key 'colour'"),
    ("streams:\n  'bad id with spaces':\n    lines: []\n", 2, "not a valid stream id"),
    ("streams:\n  cam: {lines: []}\n  cam: {lines: []}\n", 3, "appears twice"),
    ("streams: [cam-1]\n", 1, "must be a mapping"),
    ("cameras: {}\n", 1, "unknown key 'cameras'"),
    ("streams:\n  cam:\n    lines:\n      - name: l\n        points: [[one, 2], [3, 4]]\n", 5, "is not a number"),
])
def test_a_bad_file_is_refused_with_its_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(ZonesFileError) as refused:
        parse_zones(text, "zones.yaml")
    assert f"zones.yaml, line {line}:" in str(refused.value)
    assert reason in str(refused.value)


def test_a_huge_polygon_is_refused_without_checking_it_vertex_by_vertex() -> None:
    vertices = ", ".join(f"[{100 + 50 * math.cos(i / 500):.3f}, {100 + 50 * math.sin(i / 500):.3f}]"
                         for i in range(MAX_VERTICES + 1))
    with pytest.raises(ZonesFileError, match=f"above the {MAX_VERTICES} allowed"):
        parse_zones(f"streams:\n  cam:\n    zones:\n      - name: z\n        polygon: [{vertices}]\n")


def test_a_file_of_a_million_vertices_is_refused_by_its_size_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "zones.yaml"
    path.write_text("streams:\n  cam:\n    zones:\n      - name: z\n        polygon: [" +
                    ", ".join("[1, 2]" for _ in range(10**6)) + "]\n")
    with pytest.raises(ZonesFileError, match=f"above the {MAX_FILE_BYTES} allowed"):
        load_zones(path)  # from its size: it is never parsed


def test_too_many_zones_and_aliases_that_repeat_one_polygon_are_refused() -> None:
    zones = "".join(f"      - name: z{i}\n        polygon: [[0, 0], [9, 0], [9, 9]]\n" for i in range(MAX_SHAPES + 1))
    with pytest.raises(ZonesFileError, match=f"above the {MAX_SHAPES} allowed"):
        parse_zones(f"streams:\n  cam:\n    zones:\n{zones}")
    with pytest.raises(ZonesFileError, match="aliases"):
        parse_zones("streams:\n  cam:\n    zones:\n      - name: a\n        polygon: &p [[0, 0], [9, 0], [9, 9]]\n"
                    "      - name: b\n        polygon: *p\n")


def test_binary_garbage_and_a_missing_file_are_refused_with_a_reason(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ZonesFileError, match="not UTF-8|not valid YAML"):
        load_zones(garbage)
    with pytest.raises(ZonesFileError, match="cannot be read"):
        load_zones(tmp_path / "missing.yaml")


def test_a_changed_file_that_is_bad_keeps_the_previous_zones(tmp_path: Path, caplog) -> None:
    path = tmp_path / "zones.yaml"
    path.write_text(GOOD)
    reloading = ReloadingFile(path, load_zones, logger=logging.getLogger("test.zones"), what="zones file",
                              kept="zones")
    path.write_text(GOOD.replace("[640, 300]", "[.inf, 300]"))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    with caplog.at_level(logging.ERROR, logger="test.zones"):
        kept = reloading.current()
    assert kept.for_stream("site-a/cam-1").lines[0].b == (640.0, 300.0)
    assert "line 9" in caplog.text and "keeping the previous zones" in caplog.text
    path.write_text(GOOD.replace("[640, 300]", "[600, 300]"))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert reloading.current().for_stream("site-a/cam-1").lines[0].b == (600.0, 300.0)


def test_a_cloud_refuses_to_start_with_a_bad_zones_file_or_zones_without_tracking(tmp_path: Path) -> None:
    from splitinfer.errors import ServiceError
    from splitinfer.services.cloud.server import CloudConfig, CloudServer

    bad = tmp_path / "zones.yaml"
    bad.write_text("streams:\n  cam:\n    lines:\n      - name: l\n        points: [[1, 2], [.nan, 4]]\n")
    with pytest.raises(ZonesFileError, match="line 5: coordinate '.nan' is not a finite number"):
        CloudServer(CloudConfig(plaintext=True, port=0, metrics_port=-1, zones=bad))  # before any model loads
    with pytest.raises(ServiceError, match="--zones needs tracking"):
        CloudConfig(plaintext=True, zones=bad, tracking="off")
