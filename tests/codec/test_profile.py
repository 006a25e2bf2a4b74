"""Codec profiles are data: JSON with an id, rebuilt exactly, and precise errors for anything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitinfer.codec import PROFILE_ID, CodecError, CodecProfile, Coder, Quantizer


def _profile() -> CodecProfile:
    return CodecProfile(Quantizer.uniform(-0.3, 5.1, 5), coder=Coder.NEIGHBOUR_CONTEXTS, model="yolo-fastest-1.1-xl",
                        cut="80", intra_period=12, figures={"bits_per_element": 0.71, "map50": 0.455})


def test_profile_round_trips_through_json_and_files(tmp_path: Path) -> None:
    profile = _profile()
    assert json.loads(profile.to_json())["id"] == PROFILE_ID
    assert CodecProfile.from_json(profile.to_json()) == profile
    profile.save(tmp_path / "p.json")
    assert CodecProfile.load(tmp_path / "p.json") == profile
    plain = CodecProfile(Quantizer.uniform(0, 1, 2))
    assert CodecProfile.from_json(plain.to_json()) == plain and plain.coder is None


def _edited(**changes) -> str:
    data = json.loads(_profile().to_json())
    for key, value in changes.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_edited(id="numcodecs.zlib/1"), "unknown codec profile id 'numcodecs.zlib/1'"),
        (_edited(id=KeyError), "has no 'id'"),
        (_edited(quantizer=KeyError), "has no 'quantizer'"),
        (_edited(extra=1), "unknown codec profile fields \\['extra'\\]"),
        (_edited(coder="HUFFMAN"), "unknown entropy coder 'HUFFMAN'"),
        (_edited(coder=5), "'coder' must be a coder name or null"),
        (_edited(intra_period=0), "'intra_period' must be a positive integer"),
        (_edited(intra_period="30"), "'intra_period' must be a positive integer"),
        (_edited(hysteresis=-0.1), "'hysteresis' must be a number of steps in \\[0, 1.0\\]"),
        (_edited(hysteresis=2), "'hysteresis' must be a number of steps"),
        (_edited(hysteresis="0.1"), "'hysteresis' must be a number of steps"),
        (_edited(hysteresis=True), "'hysteresis' must be a number of steps"),
        (_edited(model=3), "'model' must be a string or null"),
        (_edited(figures=[1]), "'figures' must be an object"),
        (_edited(quantizer=[1]), "'quantizer' must be an object"),
        (_edited(quantizer={"kind": "UNIFORM"}), "missing fields"),
        ("[1, 2]", "must be a JSON object"),
        ("{", "not valid JSON"),
        ('{"id": NaN}', "not valid JSON"),
    ],
)
def test_bad_profiles_raise_codec_error_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        CodecProfile.from_json(text)


@pytest.mark.parametrize(
    ("quantizer", "message"),
    [
        ({"kind": "LLOYD"}, "'quantizer.kind' is 'LLOYD'"),
        ({"reconstruction": [0.0]}, "needs 2..256 levels"),
        ({"thresholds": [0.1, 0.2]}, "need 4 thresholds"),
        ({"clip_max": "big"}, "must all be numbers"),
        ({"reconstruction": [3.0, 2.0, 1.0, 0.5, 0.1]}, "ascending"),
        ({"thresholds": 1.0}, "must be a list of numbers"),
    ],
)
def test_bad_quantizers_in_profiles_raise_codec_error(quantizer: dict, message: str) -> None:
    data = json.loads(_profile().to_json())
    data["quantizer"].update(quantizer)
    with pytest.raises(CodecError, match=message):
        CodecProfile.from_json(json.dumps(data))


def test_missing_profile_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="cannot read the codec profile"):
        CodecProfile.load(tmp_path / "absent.json")


def test_hysteresis_round_trips_and_files_without_it_load_with_it_off() -> None:
    held = CodecProfile(Quantizer.uniform(-4, 4, 9), coder=Coder.TEMPORAL_CONTEXTS, hysteresis=0.1)
    assert CodecProfile.from_json(held.to_json()) == held and json.loads(held.to_json())["hysteresis"] == 0.1
    old = json.loads(_edited())
    del old["hysteresis"]
    assert CodecProfile.from_dict(old).hysteresis == 0.0


def test_the_shipped_video_profile_codes_temporally_with_hysteresis() -> None:
    profile = CodecProfile.load(Path(__file__).resolve().parents[2] / "dnn" / "profiles" / "yolo-fastest-1.1-xl-video.json")
    assert (profile.model, profile.cut, profile.coder) == ("yolo-fastest-1.1-xl", "60", Coder.TEMPORAL_CONTEXTS)
    assert 0.0 < profile.hysteresis <= 0.1 and profile.quantizer.levels == 9 and profile.intra_period == 250


def test_a_profile_names_its_coder_in_any_spelling_the_command_line_accepts() -> None:
    import json

    from splitinfer.codec import CodecProfile, Coder, Quantizer

    text = json.loads(CodecProfile(Quantizer.uniform(-1.0, 1.0, 5), coder=Coder.NEIGHBOUR_CONTEXTS).to_json())
    text["coder"] = "neighbour-contexts"
    assert CodecProfile.from_json(json.dumps(text)).coder is Coder.NEIGHBOUR_CONTEXTS


def test_mismatch_names_the_recorded_field_that_differs_and_ignores_what_is_not_recorded() -> None:
    profile = CodecProfile(Quantizer.uniform(-1.0, 1.0, 5), model="yolo", cut="80")
    assert profile.mismatch("yolo", "layer80") is None and profile.mismatch("yolo", 80) is None
    assert profile.mismatch(None, None) is None
    assert profile.mismatch("resnet", "80") == "model" and profile.mismatch("yolo", "60") == "cut"
    assert CodecProfile(Quantizer.uniform(-1.0, 1.0, 5)).mismatch("any", "12") is None
