"""The zones file (`splitinfer cloud --zones FILE`): per stream, named zones (polygons) and lines, in source pixels.

The file is YAML (JSON is YAML too) and is re-read when it changes (a ConfigMap updated in place); a bad file is
refused with the line and the reason, and the previous good one stays (splitinfer.reloading). Example:

    streams:
      site-a/cam-1:
        zones:
          - name: door
            polygon: [[100, 200], [400, 200], [400, 480], [100, 480]]
        lines:
          - name: entrance
            points: [[0, 300], [640, 300]]
            classes: [person]          # optional: only these class names (default: every class)

Coordinates are pixels of the source image (Detection's frame of reference), finite and within
0..MAX_COORDINATE; a polygon has 3..MAX_VERTICES vertices, a non-zero area and no self-intersection; a line has
two distinct points. At most MAX_STREAMS streams, MAX_SHAPES zones and lines per stream and MAX_FILE_BYTES bytes:
the bounds keep the Prometheus label sets and the per-frame work small, and a hostile file cheap to refuse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from splitinfer.errors import ConfigError

MAX_FILE_BYTES = 1024 * 1024
MAX_STREAMS = 256
MAX_SHAPES = 32
MAX_VERTICES = 256
MAX_COORDINATE = 8192.0  # the largest source image side the cloud accepts (engine.MAX_IMAGE_SIDE)
MAX_NAME = 64
_STREAM_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@/-")

Point = tuple[float, float]
# YAML's spellings of the non-finite floats (refused as coordinates, with the reason).
_YAML_SPECIAL_FLOATS = {".nan": "nan", ".inf": "inf", "+.inf": "inf", "-.inf": "-inf"}


class ZonesFileError(ConfigError):
    """The zones file cannot be read or is invalid; the message names the line and the reason."""


@dataclass(frozen=True)
class Zone:
    """A named polygon; an object is inside when its box's bottom-centre point (its feet) is."""

    name: str
    polygon: tuple[Point, ...]
    classes: frozenset[str] = frozenset()

    def contains(self, point: Point) -> bool:
        return point_in_polygon(point, self.polygon)


@dataclass(frozen=True)
class Line:
    """A named segment a track's bottom-centre point crosses, forward (left of a->b to its right) or backward."""

    name: str
    a: Point
    b: Point
    classes: frozenset[str] = frozenset()

    def crossing(self, before: Point, after: Point) -> str | None:
        """'forward' or 'backward' if the move before -> after crosses the segment, else None."""
        side_before, side_after = _side(self.a, self.b, before), _side(self.a, self.b, after)
        if side_before == 0 or side_after == 0 or (side_before > 0) == (side_after > 0):
            return None  # touching the line is not crossing it: the next move decides
        if (_side(before, after, self.a) > 0) == (_side(before, after, self.b) > 0):
            return None  # crossed the line's extension, not the segment
        # Image y points down: a positive cross product is the right of a->b as seen on screen.
        return "forward" if side_after > 0 else "backward"


@dataclass(frozen=True)
class StreamZones:
    zones: tuple[Zone, ...] = ()
    lines: tuple[Line, ...] = ()


@dataclass(frozen=True)
class ZonesConfig:
    """Every stream's zones and lines; streams not named have none."""

    streams: dict[str, StreamZones]

    def for_stream(self, stream_id: str) -> StreamZones:
        return self.streams.get(stream_id, _NONE)


_NONE = StreamZones()


def point_in_polygon(point: Point, polygon: tuple[Point, ...]) -> bool:
    """Even-odd rule (ray casting to the right)."""
    x, y = point
    inside = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def _side(a: Point, b: Point, p: Point) -> float:
    """Cross product (b - a) x (p - a): > 0 right of a->b on screen (y down), < 0 left, 0 on the line."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def _segments_cross(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """True if the segments cross at a point interior to both (proper intersection)."""
    d1, d2 = _side(q1, q2, p1), _side(q1, q2, p2)
    d3, d4 = _side(p1, p2, q1), _side(p1, p2, q2)
    return ((d1 > 0) != (d2 > 0)) and d1 != 0 and d2 != 0 and ((d3 > 0) != (d4 > 0)) and d3 != 0 and d4 != 0


def load_zones(path: Path) -> ZonesConfig:
    """The zones file at `path`, validated; ZonesFileError with the line and the reason otherwise."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ZonesFileError(f"--zones {path} is {size} bytes, above the {MAX_FILE_BYTES} allowed; split the "
                                 "zones or simplify the polygons.")
        text = path.read_text()
    except OSError as exc:
        raise ZonesFileError(f"--zones {path} cannot be read ({exc.strerror or exc}).") from exc
    except UnicodeDecodeError as exc:
        raise ZonesFileError(f"--zones {path} is not UTF-8 text.") from exc
    return parse_zones(text, str(path))


def parse_zones(text: str, where: str = "the zones file") -> ZonesConfig:
    """Parse and validate the zones file's text (see the module docstring)."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise ZonesFileError(f"{where} is above the {MAX_FILE_BYTES} bytes allowed.")
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):  # one polygon repeated by reference thousands of times
                raise ZonesFileError(f"{where}, line {event.start_mark.line + 1}: YAML aliases (*name) are not "
                                     "allowed in a zones file; write each zone out. The file was refused; the "
                                     "previous zones (if any) stay in force.")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ZonesFileError(f"{where} is not valid YAML: {exc}") from exc
    if root is None:
        return ZonesConfig({})
    checker = _Checker(where)
    streams_node = checker.mapping(root, "the file", keys={"streams"}).get("streams")
    if streams_node is None:
        return ZonesConfig({})
    streams: dict[str, StreamZones] = {}
    entries = checker.mapping_items(streams_node, "streams")
    if len(entries) > MAX_STREAMS:
        checker.fail(streams_node, f"{len(entries)} streams, above the {MAX_STREAMS} allowed")
    for key_node, value_node in entries:
        stream_id = checker.scalar(key_node, "a stream id")
        if not (1 <= len(stream_id) <= 128 and set(stream_id) <= _STREAM_ID_CHARS and stream_id[0].isalnum()):
            checker.fail(key_node, f"stream id {stream_id[:64]!r} is not a valid stream id (1-128 characters from "
                                   "letters, digits and ._:@/-, starting with a letter or digit)")
        if stream_id in streams:
            checker.fail(key_node, f"stream {stream_id!r} appears twice")
        streams[stream_id] = checker.stream(value_node, stream_id)
    return ZonesConfig(streams)


class _Checker:
    """Walks the composed YAML nodes, so that every refusal names its line."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, node: yaml.Node, reason: str) -> None:
        raise ZonesFileError(f"{self.where}, line {node.start_mark.line + 1}: {reason}. The file was refused; "
                             "the previous zones (if any) stay in force.")

    def mapping_items(self, node: yaml.Node, what: str) -> list[tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping")
        return list(node.value)

    def mapping(self, node: yaml.Node, what: str, *, keys: set[str]) -> dict[str, yaml.Node]:
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in self.mapping_items(node, what):
            key = self.scalar(key_node, "a key")
            if key not in keys:
                self.fail(key_node, f"unknown key {key[:64]!r} in {what} (known: {', '.join(sorted(keys))})")
            if key in out:
                self.fail(key_node, f"key {key!r} appears twice in {what}")
            out[key] = value_node
        return out

    def sequence(self, node: yaml.Node, what: str, *, at_most: int) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"{what} must be a list")
        if len(node.value) > at_most:
            self.fail(node, f"{what} has {len(node.value)} entries, above the {at_most} allowed")
        return list(node.value)

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, f"{what} must be a single value")
        return str(node.value)

    def name(self, node: yaml.Node | None, parent: yaml.Node, what: str) -> str:
        if node is None:
            self.fail(parent, f"{what} needs a name")
        name = self.scalar(node, f"the name of {what}")
        if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
            self.fail(node, f"the name of {what} must be 1-{MAX_NAME} printable characters")
        return name

    def number(self, node: yaml.Node) -> float:
        text = self.scalar(node, "a coordinate")
        try:
            value = float(_YAML_SPECIAL_FLOATS.get(text.lower(), text).replace("_", ""))
        except ValueError:
            self.fail(node, f"coordinate {text[:32]!r} is not a number")
        if not math.isfinite(value) or not 0 <= value <= MAX_COORDINATE:
            self.fail(node, f"coordinate {text[:32]!r} is not a finite number within 0..{MAX_COORDINATE:g} "
                            "(source-image pixels)")
        return value

    def points(self, node: yaml.Node, what: str, *, at_most: int) -> tuple[Point, ...]:
        points = []
        for point_node in self.sequence(node, what, at_most=at_most):
            pair = self.sequence(point_node, f"a point of {what}", at_most=2)
            if len(pair) != 2:
                self.fail(point_node, f"a point of {what} must be [x, y]")
            points.append((self.number(pair[0]), self.number(pair[1])))
        return tuple(points)

    def classes(self, node: yaml.Node | None, what: str) -> frozenset[str]:
        if node is None:
            return frozenset()
        return frozenset(self.scalar(n, f"a class name of {what}") for n in self.sequence(node, f"classes of {what}",
                                                                                          at_most=1000))

    def stream(self, node: yaml.Node, stream_id: str) -> StreamZones:
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "null", "~"):
            return StreamZones()
        fields = self.mapping(node, f"stream {stream_id!r}", keys={"zones", "lines"})
        zone_nodes = self.sequence(fields["zones"], "zones", at_most=MAX_SHAPES) if "zones" in fields else []
        line_nodes = self.sequence(fields["lines"], "lines", at_most=MAX_SHAPES) if "lines" in fields else []
        if len(zone_nodes) + len(line_nodes) > MAX_SHAPES:
            self.fail(node, f"stream {stream_id!r} has {len(zone_nodes) + len(line_nodes)} zones and lines, above "
                            f"the {MAX_SHAPES} allowed")
        names: set[str] = set()
        zones, lines = [], []
        for zone_node in zone_nodes:
            entry = self.mapping(zone_node, "a zone", keys={"name", "polygon", "classes"})
            name = self.name(entry.get("name"), zone_node, "a zone")
            if "polygon" not in entry:
                self.fail(zone_node, f"zone {name!r} needs a polygon: [[x, y], ...]")
            polygon = self.points(entry["polygon"], f"zone {name!r}", at_most=MAX_VERTICES)
            self.check_polygon(entry["polygon"], name, polygon)
            self.unique(zone_node, name, names)
            zones.append(Zone(name, polygon, self.classes(entry.get("classes"), f"zone {name!r}")))
        for line_node in line_nodes:
            entry = self.mapping(line_node, "a line", keys={"name", "points", "classes"})
            name = self.name(entry.get("name"), line_node, "a line")
            if "points" not in entry:
                self.fail(line_node, f"line {name!r} needs points: [[x1, y1], [x2, y2]]")
            points = self.points(entry["points"], f"line {name!r}", at_most=2)
            if len(points) != 2 or points[0] == points[1]:
                self.fail(entry["points"], f"line {name!r} needs two distinct points")
            self.unique(line_node, name, names)
            lines.append(Line(name, points[0], points[1], self.classes(entry.get("classes"), f"line {name!r}")))
        return StreamZones(tuple(zones), tuple(lines))

    def unique(self, node: yaml.Node, name: str, names: set[str]) -> None:
        if name in names:
            self.fail(node, f"the name {name!r} is used twice in this stream (zones and lines share names)")
        names.add(name)

    def check_polygon(self, node: yaml.Node, name: str, polygon: tuple[Point, ...]) -> None:
        if len(polygon) < 3:
            self.fail(node, f"zone {name!r} has {len(polygon)} vertices; a polygon needs at least 3")
        n = len(polygon)
        for i in range(n):
            for j in range(i + 2, n):
                if i == 0 and j == n - 1:
                    continue  # adjacent through the closing edge
                if _segments_cross(polygon[i], polygon[(i + 1) % n], polygon[j], polygon[(j + 1) % n]):
                    self.fail(node, f"zone {name!r} intersects itself (edges {i + 1} and {j + 1} cross); list the "
                                    "vertices in order around the zone")
        area = sum(polygon[i - 1][0] * polygon[i][1] - polygon[i][0] * polygon[i - 1][1]
                   for i in range(len(polygon))) / 2
        if abs(area) < 1.0:
            self.fail(node, f"zone {name!r} has an area below one pixel (are its vertices on one line?)")
