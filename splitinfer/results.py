"""Inference results as plain data: JSON-lines records and COCO results JSON (used by the edge, watch and the
clients, so it lives below services and clients)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from splitinfer.v1 import inference_pb2

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


def result_to_dict(result: inference_pb2.InferenceResult) -> dict:
    """One frame's result as a JSON-ready dict (the JSON-lines format of `splitinfer edge` and `watch`)."""
    record: dict = {
        "stream_id": result.stream_id,
        "frame_id": result.frame_id,
        "capture_time": capture_time_iso(result),
        "model": result.model,
        "width": result.capture.image_width,
        "height": result.capture.image_height,
        "detections": [
            {"x1": round(d.x1, 2), "y1": round(d.y1, 2), "x2": round(d.x2, 2), "y2": round(d.y2, 2),
             "class_id": d.class_id, "label": d.label, "score": round(d.score, 4)}
            for d in result.detections
        ],
    }
    if result.classes:
        record["classes"] = [{"class_id": c.class_id, "label": c.label, "score": round(c.score, 4)}
                             for c in result.classes]
    if result.HasField("error"):
        record["error"] = {"code": result.error.code, "message": result.error.message,
                           "intra_frame_requested": result.error.intra_frame_requested}
    record["payload_bytes"] = result.payload_bytes
    record["elements"] = result.elements
    record["stage_seconds"] = {k: round(v, 6) for k, v in sorted(result.stage_seconds.items())}
    return record


def coco_results(results: Iterable[inference_pb2.InferenceResult], *, image_ids: dict | None = None) -> list[dict]:
    """COCO results JSON (image_id, category_id, bbox [x, y, w, h], score) for pycocotools' loadRes.

    image_id is the frame id unless `image_ids` maps (stream_id, frame_id) to a COCO image id; class
    indices beyond the 80 COCO classes keep their index as category id.
    """
    out = []
    for result in results:
        image_id = result.frame_id if image_ids is None else image_ids[(result.stream_id, result.frame_id)]
        for d in result.detections:
            category = COCO_CATEGORY_IDS[d.class_id] if d.class_id < len(COCO_CATEGORY_IDS) else d.class_id
            out.append({"image_id": int(image_id), "category_id": int(category),
                        "bbox": [round(d.x1, 2), round(d.y1, 2), round(d.x2 - d.x1, 2), round(d.y2 - d.y1, 2)],
                        "score": round(float(d.score), 5)})
    return out
