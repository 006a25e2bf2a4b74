"""Tracks and track events in the cloud: one tracker state per stream id, fed its results in frame order.

`Tracker.observe(result)` sets `track_id` on the result's detections and returns the stream's new track events
(zone entered / left with dwell time, line crossed with direction; services/cloud/zones.py). State is keyed by
stream id, not by Infer call, so an edge that reconnects and resumes keeps its tracks; frames of different
streams may be batched together (each stream's results still arrive here one at a time, in order). A result whose
frame is not after the stream's last one (a frame resent after a reconnect, a late duplicate) is not tracked
(track ids 0, no events); a frame id that goes back with a later capture time is a restarted edge: the stream's
tracker starts afresh and says so (TRACK_EVENT_KIND_TRACKS_RESTARTED), as it does for a stream it has not seen
and cannot resume. A stream that moved here from a replica that died resumes from its last result on the bus
(`Tracker.resume`: its tracks' ids and points, its line counts). docs/TRACKS.md.

The tracker is supervision's ByteTrack (the `tracks` extra), one per class within a stream so that a person
never inherits a bag's id; ids are numbered per stream from 1. supervision is imported on first use.
"""

from __future__ import annotations

import collections
import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from splitinfer.errors import ServiceError
from splitinfer.services.cloud.zones import Point, StreamZones, ZonesConfig
from splitinfer.v1 import inference_pb2

# Streams whose tracker state is kept (least recently used first out): bounds memory against many stream ids.
MAX_STREAMS = 4096
# Frames a track may go unseen before it is gone (ByteTrack's lost-track buffer at 30 frames per second).
LOST_FRAMES = 30
# A stream resumes its tracks from its last result on the bus (a failover) only if that result's capture time is
# at most this long before the frame now: an older one would seed tracks of objects long gone.
RESUME_WITHIN_S = 30.0
# Track ids a resumed stream may continue from (uint32 on the wire; far above what a stream ever numbers).
MAX_TRACK_ID = 2**31
INSTALL_HINT = "pip install 'splitinfer[tracks]'"


class TrackingUnavailableError(ServiceError):
    """Tracking was asked for but supervision (the `tracks` extra) is not installed."""


def tracking_available() -> bool:
    """True when supervision's ByteTrack can be imported."""
    try:
        _library()
    except TrackingUnavailableError:
        return False
    return True


def _library() -> Any:
    try:
        from scipy.optimize import linear_sum_assignment
        from supervision import ByteTrack
    except ImportError as exc:
        raise TrackingUnavailableError(f"tracking needs the supervision package, which is not installed: run "
                                       f"{INSTALL_HINT}, or start the cloud with --tracking off.") from exc
    return ByteTrack, linear_sum_assignment


def _new_byte_track() -> Any:
    byte_track, _ = _library()
    with warnings.catch_warnings():
        # supervision 0.30 announces ByteTrack's move to the `trackers` package (docs/TRACKS.md says why we stay).
        warnings.simplefilter("ignore")
        return byte_track(lost_track_buffer=LOST_FRAMES)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of boxes (x1, y1, x2, y2): rows of `a` by rows of `b`."""
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def event_id(stream_id: str, frame_id: int, capture_ns: int, kind: int, name: str, track_id: int) -> str:
    """The stable id of an event: the same frame, track and zone always give the same id (deduplication)."""
    key = f"{stream_id}\0{frame_id}\0{capture_ns}\0{kind}\0{name}\0{track_id}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def anchor(detection: inference_pb2.Detection) -> Point:
    """The point of a box that zones and lines test: its bottom centre (where a person stands)."""
    return ((detection.x1 + detection.x2) / 2, detection.y2)


@dataclass
class _Track:
    track_id: int
    class_id: int
    label: str
    last_seen: int  # index of the last tracked frame that had it
    point: Point
    inside: dict[str, int] = field(default_factory=dict)  # zone name -> capture ns when it entered


def zone_shapes(zones: StreamZones) -> list[inference_pb2.ZoneShape]:
    """A stream's zones and lines in their wire form (StreamAccepted.zones), for the edge to draw."""
    shapes = [inference_pb2.ZoneShape(name=zone.name, kind=inference_pb2.ZONE_SHAPE_KIND_ZONE,
                                      coordinates=[c for point in zone.polygon for c in point]) for zone in zones.zones]
    shapes += [inference_pb2.ZoneShape(name=line.name, kind=inference_pb2.ZONE_SHAPE_KIND_LINE,
                                       coordinates=[*line.a, *line.b]) for line in zones.lines]
    return shapes


class StreamTracks:
    """One stream's tracker: ByteTrack per class, stream-unique track ids, and each track's zones and last point."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self._byte_tracks: dict[int, Any] = {}
        self._ids: dict[tuple[int, int], _Track] = {}  # (class id, ByteTrack id) -> track
        self._next_id = 1
        self._frames = 0
        self.last_frame: tuple[int, int] | None = None  # (frame id, capture ns) of the last tracked result
        self.occupancy: collections.Counter[str] = collections.Counter()
        self.crossings: collections.Counter[tuple[str, str]] = collections.Counter()

    def follows(self, frame_id: int) -> bool:
        """True if a result of this frame may be tracked now: it comes after the last one."""
        return self.last_frame is None or frame_id > self.last_frame[0]

    def restarted_by(self, frame_id: int, capture_ns: int) -> bool:
        """True if the frame id went back with a later capture time: the edge restarted its numbering."""
        return self.last_frame is not None and frame_id <= self.last_frame[0] and capture_ns > self.last_frame[1]

    def update(self, result: inference_pb2.InferenceResult, zones: StreamZones) -> list[inference_pb2.TrackEvent]:
        """Assign track ids to the result's detections and return the events they cause (frame order assumed)."""
        capture_ns = result.capture.capture_time.ToNanoseconds()
        self.last_frame = (result.frame_id, capture_ns)
        self._frames += 1
        by_class: dict[int, list[int]] = collections.defaultdict(list)
        for index, detection in enumerate(result.detections):
            by_class[detection.class_id].append(index)
        events: list[inference_pb2.TrackEvent] = []
        seen: set[tuple[int, int]] = set()
        for class_id in sorted(set(by_class) | set(self._byte_tracks)):
            indices = by_class.get(class_id, [])
            for index, external in self._track_class(class_id, result, indices):
                detection = result.detections[index]
                key = (class_id, external)
                track = self._ids.get(key)
                point = anchor(detection)
                if track is None:
                    track = self._ids[key] = _Track(self._next_id, class_id, detection.label, self._frames, point)
                    self._next_id += 1
                    before = None
                else:
                    before = track.point
                seen.add(key)
                detection.track_id = track.track_id
                track.last_seen, track.point = self._frames, point
                events += self._zone_events(track, result, capture_ns, zones, before)
        for key in [key for key, track in self._ids.items() if self._frames - track.last_seen > LOST_FRAMES]:
            track = self._ids.pop(key)
            for name in list(track.inside):
                events.append(self._left(track, name, result, capture_ns))
        return events

    def seed(self, last: inference_pb2.InferenceResult, zones: StreamZones) -> None:
        """Resume from the stream's last published result (another replica's, before it died): each tracked
        detection of it becomes a track with its id and point, inside the zones its point is in; the line counts
        go on from its zone_counts. ByteTrack confirms tracks of its first frame at once, so the next frame
        matches them by IoU as usual."""
        capture_ns = last.capture.capture_time.ToNanoseconds()
        self.last_frame = (last.frame_id, capture_ns)
        self._frames = 1
        by_class: dict[int, list[int]] = collections.defaultdict(list)
        for index, detection in enumerate(last.detections):
            if detection.track_id:
                by_class[detection.class_id].append(index)
        # Every tracked detection must become a track, also a faint one that an existing track had matched:
        # ByteTrack starts tracks only from confident detections, so it is shown them all at full score.
        confident = inference_pb2.InferenceResult()
        confident.detections.extend(last.detections)
        for detection in confident.detections:
            detection.score = 1.0
        for class_id, indices in sorted(by_class.items()):
            self._byte_tracks[class_id] = _new_byte_track()
            for index, external in self._track_class(class_id, confident, indices):
                detection = last.detections[index]
                track = _Track(detection.track_id, class_id, detection.label, self._frames, anchor(detection))
                for zone in zones.zones:
                    if (not zone.classes or track.label in zone.classes) and zone.contains(track.point):
                        track.inside[zone.name] = capture_ns  # when it entered is not in the result: dwell from here
                        self.occupancy[zone.name] += 1
                self._ids[(class_id, external)] = track
        self._next_id = max((d.track_id for d in last.detections), default=0) + 1
        for count in last.zone_counts:
            if count.kind == inference_pb2.ZONE_SHAPE_KIND_LINE:
                self.crossings[(count.name, "forward")] = count.forward
                self.crossings[(count.name, "backward")] = count.backward

    def counts(self, zones: StreamZones) -> list[inference_pb2.ZoneCount]:
        """Every zone's and line's counts now (InferenceResult.zone_counts), in the zones file's order."""
        counts = [inference_pb2.ZoneCount(name=zone.name, kind=inference_pb2.ZONE_SHAPE_KIND_ZONE,
                                          inside=self.occupancy[zone.name]) for zone in zones.zones]
        counts += [inference_pb2.ZoneCount(name=line.name, kind=inference_pb2.ZONE_SHAPE_KIND_LINE,
                                           forward=self.crossings[(line.name, "forward")],
                                           backward=self.crossings[(line.name, "backward")]) for line in zones.lines]
        return counts

    def _track_class(self, class_id: int, result: inference_pb2.InferenceResult, indices: list[int]
                     ) -> list[tuple[int, int]]:
        """(detection index, ByteTrack id) of the class's tracked detections in this frame."""
        byte_track = self._byte_tracks.get(class_id)
        if byte_track is None:
            if not indices:
                return []
            byte_track = self._byte_tracks[class_id] = _new_byte_track()
        detections = [result.detections[i] for i in indices]
        tensors = np.array([[d.x1, d.y1, d.x2, d.y2, d.score] for d in detections], dtype=np.float32).reshape(-1, 5)
        tracks = byte_track.update_with_tensors(tensors)  # the tracks matched in this frame, one detection each
        if not tracks:
            return []
        # Which detection each track took: ByteTrack copies the detection's score into the track, and its box is
        # near the detection's. (supervision's own update_with_detections matches by IoU > 0.5 alone, which loses
        # a fast walker whose Kalman box lags behind: 14 of 40 frames of the shared video.)
        track_boxes = np.array([t.tlbr for t in tracks], dtype=np.float32)
        cost = (tensors[:, 4:5] != np.array([[t.score for t in tracks]], dtype=np.float32)).astype(np.float32)
        cost += 1 - _iou(tensors[:, :4], track_boxes)
        _, linear_sum_assignment = _library()
        rows, columns = linear_sum_assignment(cost)
        return [(indices[r], int(tracks[c].external_track_id)) for r, c in zip(rows, columns)
                if cost[r, c] < 2 and tracks[c].external_track_id > 0]

    def _zone_events(self, track: _Track, result: inference_pb2.InferenceResult, capture_ns: int,
                     zones: StreamZones, before: Point | None) -> list[inference_pb2.TrackEvent]:
        events = []
        for zone in zones.zones:
            if zone.classes and track.label not in zone.classes:
                continue
            inside = zone.contains(track.point)
            if inside and zone.name not in track.inside:
                track.inside[zone.name] = capture_ns
                self.occupancy[zone.name] += 1
                events.append(self._event(inference_pb2.TRACK_EVENT_KIND_ZONE_ENTERED, zone.name, track, result,
                                          capture_ns, count=self.occupancy[zone.name]))
            elif not inside and zone.name in track.inside:
                events.append(self._left(track, zone.name, result, capture_ns))
        for name in [n for n in track.inside if n not in {z.name for z in zones.zones}]:
            del track.inside[name]  # the zone was removed from the zones file
            self.occupancy.pop(name, None)
        if before is not None:
            for line in zones.lines:
                if line.classes and track.label not in line.classes:
                    continue
                direction = line.crossing(before, track.point)
                if direction is not None:
                    self.crossings[(line.name, direction)] += 1
                    events.append(self._event(inference_pb2.TRACK_EVENT_KIND_LINE_CROSSED, line.name, track, result,
                                              capture_ns, direction=direction,
                                              count=self.crossings[(line.name, direction)]))
        return events

    def _left(self, track: _Track, name: str, result: inference_pb2.InferenceResult, capture_ns: int
              ) -> inference_pb2.TrackEvent:
        entered = track.inside.pop(name)
        self.occupancy[name] = max(0, self.occupancy[name] - 1)
        dwell = (capture_ns - entered) / 1e9 if capture_ns and entered else 0.0
        return self._event(inference_pb2.TRACK_EVENT_KIND_ZONE_LEFT, name, track, result, capture_ns,
                           dwell_seconds=max(0.0, dwell), count=self.occupancy[name])

    def _event(self, kind: inference_pb2.TrackEventKind, name: str, track: _Track | None,
               result: inference_pb2.InferenceResult, capture_ns: int, **fields: Any) -> inference_pb2.TrackEvent:
        track_id = track.track_id if track is not None else 0
        event = inference_pb2.TrackEvent(
            id=event_id(result.stream_id, result.frame_id, capture_ns, kind, name, track_id),
            stream_id=result.stream_id, frame_id=result.frame_id, kind=kind, name=name, track_id=track_id,
            class_id=track.class_id if track is not None else 0, label=track.label if track is not None else "",
            **fields)
        if result.capture.HasField("capture_time"):
            event.time.CopyFrom(result.capture.capture_time)
        return event

    def restart_event(self, result: inference_pb2.InferenceResult) -> inference_pb2.TrackEvent:
        """The event that says this stream's track ids start afresh at this frame."""
        return self._event(inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED, "", None, result,
                           result.capture.capture_time.ToNanoseconds())


class Tracker:
    """Every stream's StreamTracks, at most `max_streams` (the least recently used is forgotten first).

    `zones` gives the zones now (a ReloadingFile's current, or None for no zones); `on_event` is called with
    every event (metrics). Runs on the server's event loop: one result at a time, no lock needed.
    """

    def __init__(self, zones: Callable[[], ZonesConfig] | None = None, *, max_streams: int = MAX_STREAMS,
                 on_event: Callable[[inference_pb2.TrackEvent], None] | None = None,
                 on_stale: Callable[[], None] | None = None) -> None:
        _library()  # a missing package fails here, when the cloud starts, not at the first frame
        self._zones = zones
        self.max_streams = max_streams
        self._streams: collections.OrderedDict[str, StreamTracks] = collections.OrderedDict()
        self._on_event = on_event
        self._on_stale = on_stale

    def __len__(self) -> int:
        return len(self._streams)

    def zones_of(self, stream_id: str) -> StreamZones:
        """The stream's zones and lines now (none without a zones file)."""
        return self._zones().for_stream(stream_id) if self._zones is not None else StreamZones()

    def knows(self, stream_id: str) -> bool:
        """True if this process tracks the stream already (else its first result may resume from the bus)."""
        return stream_id in self._streams

    def resume(self, last: inference_pb2.InferenceResult | None, result: inference_pb2.InferenceResult) -> bool:
        """Seed a stream this process has no tracks for from `last`, its last result on the bus, before `result`
        is observed; True if it did. Not when `last` is missing, more than RESUME_WITHIN_S older, or
        `result` is a restarted edge's (its frame id went back with a later capture time): then the stream's
        tracks start afresh (TRACKS_RESTARTED) as before."""
        if last is None or self.knows(result.stream_id) or last.HasField("error") or last.stream_id != result.stream_id:
            return False
        last_ns, now_ns = last.capture.capture_time.ToNanoseconds(), result.capture.capture_time.ToNanoseconds()
        if result.frame_id <= last.frame_id and now_ns > last_ns:
            return False  # a restarted edge
        if now_ns - last_ns > RESUME_WITHIN_S * 1e9:
            return False  # the stream stood still too long: its objects are gone
        if max((d.track_id for d in last.detections), default=0) >= MAX_TRACK_ID:
            return False  # ids this high were not ours to continue: start afresh rather than overflow
        tracks = StreamTracks(result.stream_id)
        tracks.seed(last, self.zones_of(result.stream_id))
        self._streams[result.stream_id] = tracks
        if len(self._streams) > self.max_streams:
            self._streams.popitem(last=False)
        return True

    def observe(self, result: inference_pb2.InferenceResult) -> list[inference_pb2.TrackEvent]:
        """Track one result (in place: track ids) and return its events; see the module docstring for the order."""
        if result.HasField("error") or not result.detections and result.classes:
            return []  # nothing to track (a refused frame, a classifier)
        capture_ns = result.capture.capture_time.ToNanoseconds()
        tracks = self._streams.get(result.stream_id)
        events: list[inference_pb2.TrackEvent] = []
        if tracks is not None and tracks.restarted_by(result.frame_id, capture_ns):
            tracks = None
        if tracks is None:
            tracks = StreamTracks(result.stream_id)
            self._streams[result.stream_id] = tracks
            if len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
            events.append(tracks.restart_event(result))
        elif not tracks.follows(result.frame_id):
            for detection in result.detections:
                detection.track_id = 0
            if self._on_stale is not None:
                self._on_stale()
            return []
        self._streams.move_to_end(result.stream_id)
        zones = self.zones_of(result.stream_id)
        events += tracks.update(result, zones)
        result.zone_counts.extend(tracks.counts(zones))
        if self._on_event is not None:
            for event in events:
                self._on_event(event)
        return events
