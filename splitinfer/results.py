"""Inference results as data: the one JSON form (protobuf's JSON mapping), CloudEvents and COCO results JSON.

Used by the edge's JSON lines, `splitinfer watch`, the results bus and the Python clients, so it lives
below services and clients. The JSON form is `google.protobuf.json_format.MessageToDict` of an
`InferenceResult` with the proto field names and every field without presence printed (so a record
always carries `detections`, even empty); uint64 fields (frame_id, payload_bytes, elements) are decimal
strings and timestamps RFC 3339, as the mapping prescribes. docs/RESULTS_SCHEMA.md describes it and
docs/inference_result.schema.json is its JSON Schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from google.protobuf import json_format

from splitinfer.v1 import inference_pb2

# The proto message, hence the schema version: a breaking change means splitinfer.v2.
RESULT_TYPE = inference_pb2.InferenceResult.DESCRIPTOR.full_name
SCHEMA_ID = "urn:splitinfer:schema:v1:inference-result"
CLOUDEVENTS_TYPE = "io.splitinfer.v1.InferenceResult"
# Track events (docs/TRACKS.md): CloudEvents type `io.splitinfer.v1.TrackEvent.<kind>`, e.g. `.line_crossed`.
TRACK_EVENT_TYPE = inference_pb2.TrackEvent.DESCRIPTOR.full_name
TRACK_EVENT_SCHEMA_ID = "urn:splitinfer:schema:v1:track-event"
PROTOBUF_CONTENT_TYPE = f"application/protobuf; proto={RESULT_TYPE}"
# Fields a JSON line may carry beside the result's own: who adds them is said in docs/RESULTS_SCHEMA.md.
ANNOTATIONS = {"latency_s": "edge", "dropped_before": "watch", "sequence": "watch"}

# Darknet/YOLO class index i is the i-th of the sorted COCO category ids.
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)


def capture_time_iso(result: inference_pb2.InferenceResult) -> str | None:
    """The capture time as ISO 8601 UTC with microseconds, or None if the edge sent none."""
    if not result.capture.HasField("capture_time"):
        return None
    stamp = result.capture.capture_time
    moment = datetime.fromtimestamp(stamp.seconds, tz=timezone.utc).replace(microsecond=stamp.nanos // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def result_id(result: inference_pb2.InferenceResult) -> str:
    """The result's id, `<stream_id>/<frame_id>`: unique per frame, used to deduplicate on the bus."""
    return f"{result.stream_id}/{result.frame_id}"


def result_to_dict(result: inference_pb2.InferenceResult) -> dict[str, Any]:
    """One frame's result in the JSON form (protobuf JSON mapping, proto field names, every field printed)."""
    return json_format.MessageToDict(result, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def result_from_dict(record: Mapping[str, Any]) -> inference_pb2.InferenceResult:
    """The result back from its JSON form; annotations (latency_s, dropped_before, sequence) are ignored."""
    fields = {k: v for k, v in record.items() if k not in ANNOTATIONS}
    return json_format.ParseDict(fields, inference_pb2.InferenceResult())


def result_to_json(result: inference_pb2.InferenceResult, **annotations: Any) -> str:
    """One JSON line: the result's JSON form plus annotations (see ANNOTATIONS), compact, no newline."""
    unknown = set(annotations) - set(ANNOTATIONS)
    if unknown:
        raise ValueError(f"unknown annotations {sorted(unknown)}; the schema allows {sorted(ANNOTATIONS)}")
    record = result_to_dict(result)
    record.update(annotations)
    return json.dumps(record, separators=(",", ":"))


def result_to_line(result: inference_pb2.InferenceResult, received_ns: int | None = None) -> str:
    """One result for people, e.g. `12:01:03 cam-1 #42 person x3, car x1 (45 ms)`: the capture time (local clock),
    stream, frame, objects per class (classifiers: the top classes with their scores) and, when the capture time
    is known, how long after the capture the result arrived (`received_ns`, wall clock; clocks of different
    machines may disagree)."""
    stamp = result.capture.capture_time if result.capture.HasField("capture_time") else None
    captured_ns = stamp.seconds * 10**9 + stamp.nanos if stamp is not None else None
    moment = datetime.fromtimestamp((captured_ns or received_ns or 0) / 1e9) if (captured_ns or received_ns) else None
    head = f"{moment:%H:%M:%S} " if moment else ""
    head += f"{result.stream_id} #{result.frame_id}"
    if result.HasField("error"):
        reason = inference_pb2.FrameErrorReason.Name(result.error.reason)
        return f"{head} error ({reason}): {result.error.message}"
    if result.detections:
        counts: dict[str, int] = {}
        tracks: dict[str, list[int]] = {}
        for detection in result.detections:
            name = detection.label or f"class {detection.class_id}"
            counts[name] = counts.get(name, 0) + 1
            if detection.track_id:
                tracks.setdefault(name, []).append(detection.track_id)
        body = ", ".join(f"{name} x{n}" + (f" #{','.join(map(str, sorted(tracks[name])))}" if name in tracks else "")
                         for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    elif result.classes:
        body = ", ".join(f"{c.label or f'class {c.class_id}'} {c.score:.2f}" for c in result.classes[:3])
    else:
        body = "nothing found"
    if captured_ns is not None and received_ns is not None and 0 <= received_ns - captured_ns < 3600 * 10**9:
        body += f" ({(received_ns - captured_ns) / 1e6:.0f} ms)"
    return f"{head} {body}"


def event_kind(event: inference_pb2.TrackEvent) -> str:
    """The event's kind in lower case, e.g. `line_crossed`."""
    return inference_pb2.TrackEventKind.Name(event.kind).removeprefix("TRACK_EVENT_KIND_").lower()


def event_to_dict(event: inference_pb2.TrackEvent) -> dict[str, Any]:
    """A track event in the JSON form (protobuf JSON mapping, proto field names, every field printed)."""
    return json_format.MessageToDict(event, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def event_to_line(event: inference_pb2.TrackEvent) -> str:
    """A track event for people, e.g. `12:01:03 cam-1 #42 person #7 line_crossed entrance forward (3)`."""
    moment = datetime.fromtimestamp(event.time.seconds + event.time.nanos / 1e9) if event.HasField("time") else None
    head = (f"{moment:%H:%M:%S} " if moment else "") + f"{event.stream_id} #{event.frame_id}"
    kind = event_kind(event)
    if event.kind == inference_pb2.TRACK_EVENT_KIND_TRACKS_RESTARTED:
        return f"{head} {kind}: track ids start afresh"
    body = f"{event.label or f'class {event.class_id}'} #{event.track_id} {kind} {event.name}"
    if event.kind == inference_pb2.TRACK_EVENT_KIND_LINE_CROSSED:
        body += f" {event.direction} ({event.count} so far)"
    elif event.kind == inference_pb2.TRACK_EVENT_KIND_ZONE_LEFT:
        body += f" after {event.dwell_seconds:.1f} s ({event.count} inside)"
    else:
        body += f" ({event.count} inside)"
    return f"{head} {body}"


def event_to_cloudevent(event: inference_pb2.TrackEvent, source: str) -> dict[str, Any]:
    """A track event as a CloudEvents 1.0 event in structured JSON mode (the bus's splitinfer.tracks.<stream>)."""
    cloudevent: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.id,
        "source": source,
        "type": f"io.{TRACK_EVENT_TYPE}.{event_kind(event)}",
        "subject": event.stream_id,
        "datacontenttype": "application/json",
        "dataschema": TRACK_EVENT_SCHEMA_ID,
    }
    if event.HasField("time"):
        cloudevent["time"] = event.time.ToJsonString()
    cloudevent["data"] = event_to_dict(event)
    return cloudevent


def event_from_cloudevent(cloudevent: Mapping[str, Any]) -> inference_pb2.TrackEvent:
    """The track event back from its CloudEvent (ValueError if `data` is not one)."""
    data = cloudevent.get("data") if isinstance(cloudevent, Mapping) else None
    if not isinstance(data, Mapping):
        raise ValueError("the CloudEvent has no track event in its data")
    try:
        return json_format.ParseDict(data, inference_pb2.TrackEvent())
    except json_format.ParseError as exc:
        raise ValueError(f"the CloudEvent's data is not a track event: {exc}") from exc


def to_cloudevent(result: inference_pb2.InferenceResult, source: str) -> dict[str, Any]:
    """The result as a CloudEvents 1.0 event in structured JSON mode (the bus's JSON variant)."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": result_id(result),
        "source": source,
        "type": CLOUDEVENTS_TYPE,
        "subject": result.stream_id,
        "datacontenttype": "application/json",
        "dataschema": SCHEMA_ID,
    }
    stamp = capture_time_iso(result)
    if stamp is not None:
        event["time"] = stamp
    event["data"] = result_to_dict(result)
    return event


def coco_image_ids(results: Iterable[inference_pb2.InferenceResult]) -> dict[tuple[str, int], int]:
    """Unique COCO image ids, 1, 2, ..., per (stream_id, frame_id) in order of first appearance."""
    ids: dict[tuple[str, int], int] = {}
    for result in results:
        ids.setdefault((result.stream_id, result.frame_id), len(ids) + 1)
    return ids


def coco_results(results: Iterable[inference_pb2.InferenceResult], *,
                 image_ids: Mapping[tuple[str, int], int] | None = None) -> list[dict]:
    """COCO results JSON (image_id, category_id, bbox [x, y, w, h], score) for pycocotools' loadRes.

    image_id comes from `image_ids`, a map of (stream_id, frame_id) to COCO image id (default:
    coco_image_ids, unique across streams); class indices beyond the 80 COCO classes keep their index as
    category id.
    """
    results = list(results)
    image_ids = coco_image_ids(results) if image_ids is None else image_ids
    out = []
    for result in results:
        image_id = image_ids[(result.stream_id, result.frame_id)]
        for d in result.detections:
            category = COCO_CATEGORY_IDS[d.class_id] if d.class_id < len(COCO_CATEGORY_IDS) else d.class_id
            out.append({"image_id": int(image_id), "category_id": int(category),
                        "bbox": [round(d.x1, 2), round(d.y1, 2), round(d.x2 - d.x1, 2), round(d.y2 - d.y1, 2)],
                        "score": round(float(d.score), 5)})
    return out
