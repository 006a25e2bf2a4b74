"""The client API: exported names, JSON-lines records and COCO results."""

from __future__ import annotations

import splitinfer.clients as clients
from splitinfer.clients import COCO_CATEGORY_IDS, coco_results, result_to_dict
from splitinfer.v1 import inference_pb2


def test_exported_names_do_not_drift() -> None:
    assert sorted(clients.__all__) == [
        "Backoff", "BusConnection", "BusReader", "COCO_CATEGORY_IDS", "ChannelSecurity", "ResultSubscriber",
        "SubscribedResult", "capture_time_iso",
        "check_health", "coco_image_ids", "coco_results", "result_from_dict", "result_to_dict", "result_to_json",
        "subscribe", "to_cloudevent",
    ]
    assert all(hasattr(clients, name) for name in clients.__all__)


def make_result() -> inference_pb2.InferenceResult:
    result = inference_pb2.InferenceResult(stream_id="cam", frame_id=7, model="m")
    result.capture.capture_time.FromNanoseconds(1_700_000_000_123_456_789)
    result.capture.image_width, result.capture.image_height = 640, 480
    result.detections.add(x1=10, y1=20, x2=110, y2=220, class_id=0, label="person", score=0.9)
    result.detections.add(x1=5, y1=5, x2=15, y2=25, class_id=79, label="toothbrush", score=0.3)
    return result


def test_result_records_are_the_protobuf_json_mapping_with_proto_field_names() -> None:
    record = result_to_dict(make_result())
    assert record["capture"]["capture_time"] == "2023-11-14T22:13:20.123456789Z"
    assert (record["capture"]["image_width"], record["capture"]["image_height"], record["frame_id"]) == (640, 480, "7")
    assert record["detections"][0] == {"x1": 10, "y1": 20, "x2": 110, "y2": 220, "class_id": 0, "label": "person",
                                       "score": 0.9, "track_id": 0}  # 0: untracked (docs/TRACKS.md)
    assert "error" not in record


def test_coco_results_use_coco_category_ids_and_xywh_boxes() -> None:
    items = coco_results([make_result()], image_ids={("cam", 7): 7})
    assert len(COCO_CATEGORY_IDS) == 80 and COCO_CATEGORY_IDS[79] == 90
    assert items[0] == {"image_id": 7, "category_id": 1, "bbox": [10, 20, 100, 200], "score": 0.9}
    assert items[1]["category_id"] == 90


def _imported_modules(folder: str) -> set[str]:
    import ast
    from pathlib import Path

    names = set()
    for path in (Path(__file__).resolve().parents[2] / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return names


def test_clients_and_services_do_not_import_each_other() -> None:
    assert not {m for m in _imported_modules("clients") if m.startswith("splitinfer.services")}
    assert not {m for m in _imported_modules("services") if m.startswith("splitinfer.clients")}
