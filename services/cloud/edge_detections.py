"""The cloud's check of detections an edge computed itself (partition detections): input like any other.

A hostile or buggy edge must not push malformed results to subscribers and the bus. A frame's detections are
accepted only when every box is finite and inside the source image, every class id is one of the model's (a
label, if sent, must be that class's name), every score is in (0, 1], no track id is set (the cloud's tracker
assigns track ids, docs/TRACKS.md: an edge that sends its own would forge identities) and there are at most
MAX_DETECTIONS;
otherwise the frame is refused with the first reason found, and the stream goes on. Accepted detections are
copied field by field into server-built messages (canonical labels, best score first), so nothing else a
client put in them reaches consumers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from splitinfer.v1 import inference_pb2

# As many as the model's own postprocess keeps per image (dnn.yolo_postprocess: max_detections).
MAX_DETECTIONS = 300
_QUOTE = 64


class BadDetectionsError(ValueError):
    """The edge's detections of one frame are malformed; the message says which detection and why."""


def checked_detections(detections: Sequence[Any], *, width: int, height: int, class_names: Sequence[str]
                       ) -> list[inference_pb2.Detection]:
    """The detections as new server-built messages, best score first; BadDetectionsError on the first fault."""
    count = len(detections)  # before anything is copied: a forged frame can hold millions
    if count > MAX_DETECTIONS:
        raise BadDetectionsError(f"{count} detections in one frame; at most {MAX_DETECTIONS} are accepted.")
    checked = []
    for index, found in enumerate(detections):
        box = (found.x1, found.y1, found.x2, found.y2)
        if not all(math.isfinite(v) for v in box):
            raise BadDetectionsError(f"detection {index}: the box {box} is not finite.")
        if not (0 <= found.x1 <= found.x2 <= width and 0 <= found.y1 <= found.y2 <= height):
            raise BadDetectionsError(f"detection {index}: the box {box} is not inside the {width}x{height} image "
                                     "(0 <= x1 <= x2 <= width, 0 <= y1 <= y2 <= height).")
        if found.class_id >= len(class_names):
            raise BadDetectionsError(f"detection {index}: class id {found.class_id} is not one of the model's "
                                     f"{len(class_names)} classes.")
        label = class_names[found.class_id]
        if found.label and found.label != label:
            raise BadDetectionsError(f"detection {index}: label {found.label[:_QUOTE]!r} is not the name of class "
                                     f"{found.class_id} ({label!r}): is the edge running another model?")
        if not 0 < found.score <= 1:  # NaN fails too
            raise BadDetectionsError(f"detection {index}: score {found.score} is not in (0, 1].")
        if found.track_id:
            raise BadDetectionsError(f"detection {index}: track id {found.track_id} is set, but track ids are "
                                     "assigned by the cloud's tracker; send 0.")
        checked.append(inference_pb2.Detection(x1=found.x1, y1=found.y1, x2=found.x2, y2=found.y2,
                                               class_id=found.class_id, label=label, score=found.score))
    checked.sort(key=lambda d: -d.score)
    return checked
