"""Properties of the cloud's check of edge-computed detections (partition detections): whatever an edge sends,
either every published detection is well-formed or the frame is refused with a reason, never anything else."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.services.cloud.edge_detections import MAX_DETECTIONS, BadDetectionsError, checked_detections
from splitinfer.v1 import inference_pb2

CLASSES = [f"class-{i}" for i in range(80)]
SIZES = st.tuples(st.integers(1, 8192), st.integers(1, 8192))


def _well_formed(detection, width: int, height: int) -> bool:
    box = (detection.x1, detection.y1, detection.x2, detection.y2)
    return (all(math.isfinite(v) for v in box) and 0 <= detection.x1 <= detection.x2 <= width
            and 0 <= detection.y1 <= detection.y2 <= height and detection.class_id < len(CLASSES)
            and detection.label == CLASSES[detection.class_id] and 0 < detection.score <= 1)


@st.composite
def valid_detection(draw, width: int, height: int) -> inference_pb2.Detection:
    xs = sorted(draw(st.lists(st.floats(0, width, width=32), min_size=2, max_size=2)))
    ys = sorted(draw(st.lists(st.floats(0, height, width=32), min_size=2, max_size=2)))
    class_id = draw(st.integers(0, len(CLASSES) - 1))
    return inference_pb2.Detection(x1=xs[0], y1=ys[0], x2=xs[1], y2=ys[1], class_id=class_id,
                                   label=draw(st.sampled_from(["", CLASSES[class_id]])),
                                   score=draw(st.floats(0, 1, exclude_min=True, width=32)))


@st.composite
def valid_frame(draw) -> tuple[int, int, list]:
    width, height = draw(SIZES)
    return width, height, draw(st.lists(valid_detection(width, height), max_size=20))


@given(valid_frame())
@settings(max_examples=200, deadline=None)
def test_well_formed_detections_are_kept_best_first_with_the_models_labels(frame) -> None:
    width, height, detections = frame
    checked = checked_detections(detections, width=width, height=height, class_names=CLASSES)
    assert sorted((d.x1, d.y1, d.x2, d.y2, d.class_id, d.score) for d in checked) == \
        sorted((d.x1, d.y1, d.x2, d.y2, d.class_id, d.score) for d in detections)
    assert [d.score for d in checked] == sorted((d.score for d in checked), reverse=True)
    assert all(d.label == CLASSES[d.class_id] for d in checked)


BREAKERS = {
    "not finite": lambda d, w, h: setattr(d, "x1", math.nan),
    "infinite": lambda d, w, h: setattr(d, "y2", math.inf),
    "outside": lambda d, w, h: setattr(d, "x2", w + 1.0),
    "negative": lambda d, w, h: setattr(d, "y1", -0.5),
    "inverted": lambda d, w, h: (setattr(d, "x1", float(w)), setattr(d, "x2", 0.0)),
    "class": lambda d, w, h: setattr(d, "class_id", len(CLASSES)),
    "huge class": lambda d, w, h: setattr(d, "class_id", 2**32 - 1),
    "label": lambda d, w, h: setattr(d, "label", "not-a-class"),
    "zero score": lambda d, w, h: setattr(d, "score", 0.0),
    "negative score": lambda d, w, h: setattr(d, "score", -0.25),
    "score above one": lambda d, w, h: setattr(d, "score", 1.5),
    "nan score": lambda d, w, h: setattr(d, "score", math.nan),
    "invented track id": lambda d, w, h: setattr(d, "track_id", 7),  # only the cloud's tracker assigns them
}


@given(valid_frame(), st.sampled_from(sorted(BREAKERS)), st.data())
@settings(max_examples=300, deadline=None)
def test_one_malformed_detection_refuses_the_frame_and_says_which(frame, breaker, data) -> None:
    width, height, detections = frame
    index = data.draw(st.integers(0, len(detections)))
    bad = inference_pb2.Detection(x1=0, y1=0, x2=1, y2=1, class_id=0, score=0.5)  # well-formed until broken
    BREAKERS[breaker](bad, width, height)
    detections = [*detections[:index], bad, *detections[index:]]
    with pytest.raises(BadDetectionsError, match=f"^detection {index}: "):
        checked_detections(detections, width=width, height=height, class_names=CLASSES)


@given(SIZES, st.lists(st.builds(
    inference_pb2.Detection, x1=st.floats(width=32), y1=st.floats(width=32), x2=st.floats(width=32),
    y2=st.floats(width=32), class_id=st.integers(0, 2**32 - 1), label=st.text(max_size=8),
    score=st.floats(width=32)), max_size=8))
@settings(max_examples=300, deadline=None)
def test_anything_an_edge_sends_is_either_refused_with_a_reason_or_well_formed(size, detections) -> None:
    width, height = size
    try:
        checked = checked_detections(detections, width=width, height=height, class_names=CLASSES)
    except BadDetectionsError as exc:
        assert str(exc).startswith("detection ")
        return
    assert all(_well_formed(d, width, height) for d in checked)


@pytest.mark.parametrize("count", [MAX_DETECTIONS + 1, 10**6])
def test_too_many_detections_are_refused_before_any_is_looked_at(count) -> None:
    frame = inference_pb2.EdgeDetections()
    frame.detections.extend(inference_pb2.Detection() for _ in range(count))  # each one malformed too (score 0)
    with pytest.raises(BadDetectionsError, match=f"{count} detections in one frame; at most {MAX_DETECTIONS}"):
        checked_detections(frame.detections, width=768, height=432, class_names=CLASSES)


def test_the_most_detections_a_frame_may_carry_are_accepted() -> None:
    detections = [inference_pb2.Detection(x1=1, y1=1, x2=2, y2=2, class_id=0, score=0.5)] * MAX_DETECTIONS
    assert len(checked_detections(detections, width=768, height=432, class_names=CLASSES)) == MAX_DETECTIONS
