"""The one result schema: the JSON Schema file agrees with the proto, and what we emit validates against it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from google.protobuf.descriptor import FieldDescriptor

from splitinfer.results import (
    ANNOTATIONS,
    SCHEMA_ID,
    coco_image_ids,
    coco_results,
    result_from_dict,
    result_to_dict,
    result_to_json,
    to_cloudevent,
)
from splitinfer.v1 import inference_pb2

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "inference_result.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())

# protobuf's JSON mapping: 64-bit integers are strings, 32-bit ones numbers.
JSON_TYPES = {
    FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_BOOL: "boolean",
    FieldDescriptor.TYPE_FLOAT: "number", FieldDescriptor.TYPE_DOUBLE: "number",
    FieldDescriptor.TYPE_UINT32: "#/$defs/uint32", FieldDescriptor.TYPE_INT32: "#/$defs/int32",
    FieldDescriptor.TYPE_UINT64: "#/$defs/uint64", FieldDescriptor.TYPE_INT64: "#/$defs/int64",
}


def _resolve(node: dict) -> dict:
    while "$ref" in node and node["$ref"].startswith("#/$defs/") and node["$ref"][8:] in SCHEMA["$defs"] \
            and "properties" in SCHEMA["$defs"][node["$ref"][8:]]:
        node = SCHEMA["$defs"][node["$ref"][8:]]
    return node


def _check_message(descriptor, node: dict, path: str) -> None:
    properties = node["properties"]
    own = {k for k in properties if not (node is SCHEMA and k in ANNOTATIONS)}
    assert own == {f.name for f in descriptor.fields}, f"{path}: the schema's fields differ from the proto's"
    for field in descriptor.fields:
        prop = properties[field.name]
        where = f"{path}.{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            assert prop["type"] == "object" and "additionalProperties" in prop, where
            continue
        if field.is_repeated:
            assert prop["type"] == "array", where
            prop = prop["items"]
        if field.message_type is not None:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                assert prop == {**prop, "type": "string", "format": "date-time"}, where
            else:
                _check_message(field.message_type, _resolve(prop), where)
        elif field.enum_type is not None:  # the JSON mapping writes an enum value's name
            assert prop["type"] == "string" and prop["enum"] == [v.name for v in field.enum_type.values], where
        else:
            expected = JSON_TYPES[field.type]
            assert prop.get("$ref", prop.get("type")) == expected, f"{where}: expected {expected}"


def test_the_json_schema_has_exactly_the_proto_fields_with_their_json_mapping_types() -> None:
    assert SCHEMA["$id"] == SCHEMA_ID
    _check_message(inference_pb2.InferenceResult.DESCRIPTOR, SCHEMA, "InferenceResult")


def make_result(**fields) -> inference_pb2.InferenceResult:
    result = inference_pb2.InferenceResult(stream_id="site-a/cam-1", frame_id=2**40 + 7, model="yolo-fastest-1.1-xl",
                                           payload_bytes=3700, elements=19200, **fields)
    result.capture.capture_time.FromNanoseconds(1_700_000_000_123_456_789)
    result.capture.capture_monotonic_ns = 123
    result.capture.image_width, result.capture.image_height = 768, 432
    result.stage_seconds["tail"] = 0.012
    return result


def test_results_records_validate_and_round_trip() -> None:
    with_boxes = make_result()
    with_boxes.detections.add(x1=0, y1=1.5, x2=768, y2=20, class_id=0, label="person", score=0.9)
    failed = make_result()
    failed.error.code, failed.error.message, failed.error.intra_frame_requested = 9, "send an intra frame", True
    classified = make_result()
    classified.classes.add(class_id=3, label="shark", score=0.5)
    bare = inference_pb2.InferenceResult(stream_id="cam", frame_id=0, model="m")
    for result in (with_boxes, failed, classified, bare):
        record = result_to_dict(result)
        VALIDATOR.validate(record)
        assert result_from_dict(record) == result
    assert result_to_dict(with_boxes)["frame_id"] == str(2**40 + 7)  # exact in every language
    assert "error" not in result_to_dict(with_boxes) and result_to_dict(bare)["detections"] == []


def test_json_lines_with_annotations_validate_and_typos_do_not() -> None:
    line = json.loads(result_to_json(make_result(), latency_s=0.05, dropped_before=2, sequence="17"))
    VALIDATOR.validate(line)
    with pytest.raises(ValueError, match="unknown annotations"):
        result_to_json(make_result(), latency=0.05)
    record = result_to_dict(make_result())
    record["frameid"] = "1"
    assert not VALIDATOR.is_valid(record)
    record = result_to_dict(make_result())
    record["detections"] = [{"x1": 0, "y1": 0, "x2": 1, "y2": 1, "class_id": 0, "label": "person", "score": 1.5}]
    assert not VALIDATOR.is_valid(record)


def test_the_cloudevent_form_carries_the_required_attributes_and_the_json_form() -> None:
    event = to_cloudevent(make_result(), source="//splitinfer/cloud/replica-0")
    assert {"specversion", "id", "source", "type"} <= set(event) and event["specversion"] == "1.0"
    assert event["id"] == f"site-a/cam-1/{2**40 + 7}" and event["subject"] == "site-a/cam-1"
    assert event["time"] == "2023-11-14T22:13:20.123456Z" and event["dataschema"] == SCHEMA_ID
    VALIDATOR.validate(event["data"])


def test_coco_image_ids_are_unique_across_streams() -> None:
    a0, b0, a1 = (inference_pb2.InferenceResult(stream_id=s, frame_id=f) for s, f in (("a", 0), ("b", 0), ("a", 1)))
    for result in (a0, b0, a1):
        result.detections.add(x1=1, y1=2, x2=11, y2=22, class_id=0, label="person", score=0.5)
    ids = coco_image_ids([a0, b0, a1, a0])
    assert ids == {("a", 0): 1, ("b", 0): 2, ("a", 1): 3}
    assert [item["image_id"] for item in coco_results([a0, b0, a1])] == [1, 2, 3]


def test_a_result_reads_as_one_line_for_people() -> None:
    from datetime import datetime

    from splitinfer.results import result_to_line
    from splitinfer.v1 import inference_pb2

    result = inference_pb2.InferenceResult(stream_id="cam-1", frame_id=42)
    result.capture.capture_time.FromNanoseconds(1_796_000_000_123_000_000)
    for label, class_id in (("person", 0), ("car", 2), ("person", 0), ("person", 0)):
        result.detections.add(label=label, class_id=class_id, score=0.5)
    clock = f"{datetime.fromtimestamp(1_796_000_000.123):%H:%M:%S}"
    assert result_to_line(result, 1_796_000_000_168_000_000) == f"{clock} cam-1 #42 person x3, car x1 (45 ms)"
    empty = inference_pb2.InferenceResult(stream_id="cam-1", frame_id=43)
    assert result_to_line(empty) == "cam-1 #43 nothing found"
    failed = inference_pb2.InferenceResult(stream_id="cam-1", frame_id=44)
    failed.error.message = "corrupt payload"
    assert result_to_line(failed).startswith("cam-1 #44 error (") and "corrupt payload" in result_to_line(failed)
