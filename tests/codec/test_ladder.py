"""Codec ladders are data: calibrated points of one model and cut, cheapest first; anything else is a CodecError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.codec import CodecError, CodecProfile, Coder, Quantizer
from splitinfer.codec.ladder import LADDER_ID, CodecLadder


def point(levels: int, bits: float, **changes) -> CodecProfile:
    fields = dict(coder=Coder.TEMPORAL_CONTEXTS, model="yolo-fastest-1.1-xl", cut="60", hysteresis=0.1,
                  figures={"bits_per_element": bits, "changes_per_image": 1.0 / levels})
    fields.update(changes)
    return CodecProfile(Quantizer.uniform(-4.0, 4.0, levels), **fields)


LADDER = CodecLadder((point(3, 0.6), point(5, 1.1), point(9, 1.9)), {"calibration_images": 80})


def test_a_ladder_round_trips_through_json_and_files(tmp_path: Path) -> None:
    assert json.loads(LADDER.to_json())["id"] == LADDER_ID
    assert CodecLadder.from_json(LADDER.to_json()) == LADDER
    LADDER.save(tmp_path / "ladder.json")
    assert CodecLadder.load(tmp_path / "ladder.json") == LADDER
    assert (LADDER.model, LADDER.cut, LADDER.bits_per_element(2)) == ("yolo-fastest-1.1-xl", "60", 1.9)


@pytest.mark.parametrize(("points", "message"), [
    ((), "needs 1..32 points"),
    ((point(5, 1.1), point(3, 0.6)), "ordered by rate, cheapest first"),
    ((point(3, 0.6), point(5, 1.1, cut="80")), "has cut '80' but point 0 has '60'"),
    ((point(3, 0.6), point(5, 1.1, coder=Coder.BIN_CONTEXTS)), "shares model, cut, coder and intra period"),
    ((point(3, 0.6), point(5, 1.1, intra_period=5)), "has intra_period 5"),
    ((point(3, 0.6, figures={}),), "no measured figures.bits_per_element"),
    ((point(3, 0.6, figures={"bits_per_element": -1}),), "no measured figures.bits_per_element"),
])
def test_inconsistent_ladders_are_refused_with_the_reason(points, message) -> None:
    with pytest.raises(CodecError, match=message):
        CodecLadder(points)


def test_a_profile_is_not_a_ladder_and_fields_must_agree() -> None:
    with pytest.raises(CodecError, match="a single profile goes to --profile"):
        CodecLadder.from_json(point(3, 0.6).to_json())
    data = json.loads(LADDER.to_json())
    data["cut"] = "80"
    with pytest.raises(CodecError, match="ladder field 'cut' is '80' but its points say '60'"):
        CodecLadder.from_dict(data)
    with pytest.raises(CodecError, match="not valid JSON"):
        CodecLadder.from_json("{")
    with pytest.raises(CodecError, match="not valid JSON: NaN is not a finite number"):
        CodecLadder.from_json('{"id": NaN}')
    with pytest.raises(CodecError, match="cannot read"):
        CodecLadder.load("/nonexistent/ladder.json")


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                       max_size=4), max_leaves=20),
       st.sampled_from(["id", "model", "cut", "points", "figures", "extra"]))
def test_any_edit_of_a_ladder_loads_or_raises_codec_error(value, key) -> None:
    data = json.loads(LADDER.to_json())
    data[key] = value
    try:
        CodecLadder.from_dict(data)
    except CodecError:
        pass
