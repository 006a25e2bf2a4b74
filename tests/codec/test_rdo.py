"""Rate-distortion optimized temporal quantization: an encoder-only choice between each element's quantized level
and its reference level (and whole planes at the reference), under the unchanged decoder and bitstream."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.codec import (CodecError, CodecProfile, Coder, Quantizer, TemporalDecoder, TemporalEncoder,
                              decode_levels, encode_levels, quantize_with_reference)
from splitinfer.codec.entropy import INTER_VERSION

from .strategies import inter_frames


def inter_bytes(levels: np.ndarray, quantizer: Quantizer, reference: np.ndarray) -> int:
    return encode_levels(levels, quantizer, coder=Coder.TEMPORAL_CONTEXTS, reference=reference,
                         coder_version=INTER_VERSION).nbytes


@given(frame=inter_frames(max_planes=6), margin=st.floats(0.0, 1.0))
@settings(max_examples=100, deadline=None)
def test_lambda_zero_is_the_hysteresis_quantizer_and_with_margin_zero_plain_quantize(frame, margin: float) -> None:
    quantizer, values, reference = frame
    np.testing.assert_array_equal(quantize_with_reference(values, quantizer, reference, margin, rdo_lambda=0.0),
                                  quantize_with_reference(values, quantizer, reference, margin))
    np.testing.assert_array_equal(quantize_with_reference(values, quantizer, reference, 0.0, rdo_lambda=0.0),
                                  quantizer.quantize(values))


@given(frame=inter_frames(max_planes=6), margin=st.floats(0.0, 1.0), lam=st.floats(0.0, 64.0), weighted=st.booleans())
@settings(max_examples=200, deadline=None)
def test_levels_only_keep_the_reference_and_decode_with_the_unchanged_decoder(frame, margin, lam, weighted) -> None:
    quantizer, values, reference = frame
    weights = np.random.default_rng(0).uniform(0, 3, values.shape[0]) if weighted else None
    held = quantize_with_reference(values, quantizer, reference, margin)
    got = quantize_with_reference(values, quantizer, reference, margin, rdo_lambda=lam, plane_weights=weights)
    assert got.shape == values.shape and got.dtype == np.uint8
    assert np.all((got == held) | (got == reference))
    coded = encode_levels(got, quantizer, coder=Coder.TEMPORAL_CONTEXTS, reference=reference,
                          coder_version=INTER_VERSION)
    np.testing.assert_array_equal(decode_levels(coded, reference=reference), got)


@given(frame=inter_frames(max_planes=6), lam=st.floats(0.0, 64.0))
@settings(max_examples=200, deadline=None)
def test_bytes_never_exceed_plain_inter_coding_by_more_than_the_skip_flags(frame, lam: float) -> None:
    quantizer, values, reference = frame
    plain = quantizer.quantize(values)
    got = quantize_with_reference(values, quantizer, reference, 0.0, rdo_lambda=lam)
    planes = values.shape[0]
    assert inter_bytes(got, quantizer, reference) <= inter_bytes(plain, quantizer, reference) + (planes + 7) // 8 + 1


@given(frame=inter_frames(max_planes=6))
@settings(max_examples=100, deadline=None)
def test_a_huge_lambda_sends_nothing_and_weight_zero_planes_are_always_skipped(frame) -> None:
    quantizer, values, reference = frame
    # At most 17 levels: no change is worth 64 squared steps per bit.
    np.testing.assert_array_equal(quantize_with_reference(values, quantizer, reference, 0.0, rdo_lambda=64.0),
                                  reference)
    zero = np.zeros(values.shape[0])
    got = quantize_with_reference(values, quantizer, reference, 0.0, rdo_lambda=1e-3, plane_weights=zero)
    np.testing.assert_array_equal(got, reference)


def test_flicker_is_held_a_flickering_plane_is_skipped_and_a_real_change_passes() -> None:
    quantizer = Quantizer.uniform(-4.0, 4.0, 9)  # step 1, thresholds at +-0.5, +-1.5, ...
    previous = np.zeros((3, 8, 8), np.float32)
    previous[0] = 0.45
    reference = quantizer.quantize(previous)
    values = previous.copy()
    values[0, 0, :4] = 0.55  # plane 0: a few elements cross a threshold by a tenth of a step: flicker
    values[1] = 3.0  # plane 1: the whole plane moves three steps: a real change
    plain = quantizer.quantize(values)
    got = quantize_with_reference(values, quantizer, reference, 0.0, rdo_lambda=0.2)
    np.testing.assert_array_equal(got[0], reference[0])
    np.testing.assert_array_equal(got[1], plain[1])
    np.testing.assert_array_equal(got[2], reference[2])
    assert inter_bytes(got, quantizer, reference) < inter_bytes(plain, quantizer, reference)


def test_a_plane_of_small_scattered_changes_is_skipped_whole_where_each_alone_would_be_sent() -> None:
    quantizer = Quantizer.uniform(-4.0, 4.0, 9)
    reference = np.full((1, 16, 16), 4, np.uint8)  # level 4 = 0.0
    values = np.zeros((1, 16, 16), np.float32)
    values[0, ::5, ::5] = 0.9  # 0.9 steps from the reference, 0.1 from level 5: each change alone is worth sending
    alone = quantize_with_reference(values[:, :1, :1], quantizer, reference[:, :1, :1], 0.0, rdo_lambda=0.12)
    assert alone[0, 0, 0] == 5
    assert (quantizer.quantize(values) != reference).sum() == 16
    # 16 changes of 256 elements: each costs about 6 bits and the plane's unchanged bins about 24 more; the 16
    # changes add 16 x 0.8 squared steps of error, less than 0.12 x (16 x 6 + 24) bits.
    np.testing.assert_array_equal(quantize_with_reference(values, quantizer, reference, 0.0, rdo_lambda=0.12),
                                  reference)
    kept = quantize_with_reference(values, quantizer, reference, 0.0, rdo_lambda=0.08)
    np.testing.assert_array_equal(kept, quantizer.quantize(values))


def test_the_temporal_encoder_codes_with_rdo_and_the_decoder_follows() -> None:
    rng = np.random.default_rng(3)
    quantizer = Quantizer.uniform(-4.0, 4.0, 7)
    base = rng.normal(0, 1.5, (1, 8, 10, 10)).astype(np.float32)
    encoder = TemporalEncoder(intra_period=10, hysteresis=0.1, rdo_lambda=0.1, plane_weights={"x": np.ones(8)})
    plain = TemporalEncoder(intra_period=10, hysteresis=0.1)
    decoder = TemporalDecoder()
    sent = plain_sent = 0
    for index in range(6):
        frame = {"x": (base + rng.normal(0, 0.2, base.shape)).astype(np.float32)}
        coded = encoder.code(frame, {"x": quantizer})
        encoder.commit(coded)
        levels = decoder.decode_frame(coded.tensors, None if coded.intra else index - 1)
        decoder.commit(index, levels)
        np.testing.assert_array_equal(levels["x"].levels, coded.references["x"].levels)
        reference = plain.code(frame, {"x": quantizer})
        plain.commit(reference)
        sent, plain_sent = sent + coded.nbytes, plain_sent + reference.nbytes
    assert sent < plain_sent
    # A per-frame lambda (rate control's knob) overrides the encoder's.
    frame = {"x": base}
    assert encoder.code(frame, {"x": quantizer}, rdo_lambda=0.0).nbytes >= encoder.code(frame, {"x": quantizer}).nbytes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rdo_lambda": -0.1}, "rdo_lambda must be a number in \\[0, 64.0\\]"),
        ({"rdo_lambda": 100.0}, "rdo_lambda must be"),
        ({"rdo_lambda": float("nan")}, "rdo_lambda must be"),
        ({"rdo_lambda": True}, "rdo_lambda must be"),
        ({"rdo_lambda": "0.1"}, "rdo_lambda must be"),
        ({"rdo_lambda": 0.1, "plane_weights": np.ones(3)}, "plane_weights must be 2 real numbers"),
        ({"rdo_lambda": 0.1, "plane_weights": np.array(["a", "b"])}, "plane_weights must be 2 real numbers"),
        ({"rdo_lambda": 0.1, "plane_weights": np.array([1.0, np.nan])}, "finite and non-negative"),
        ({"rdo_lambda": 0.1, "plane_weights": np.array([1.0, -1.0])}, "finite and non-negative"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(kwargs, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        quantize_with_reference(np.zeros((2, 3, 3), np.float32), Quantizer.uniform(-4.0, 4.0, 9),
                                np.full((2, 3, 3), 4, np.uint8), 0.1, **kwargs)


def test_the_profile_carries_lambda_and_files_without_it_load_with_it_off() -> None:
    profile = CodecProfile(Quantizer.uniform(-4, 4, 9), coder=Coder.TEMPORAL_CONTEXTS, hysteresis=0.1, rdo_lambda=0.05)
    assert CodecProfile.from_json(profile.to_json()) == profile and json.loads(profile.to_json())["rdo_lambda"] == 0.05
    old = json.loads(profile.to_json())
    del old["rdo_lambda"]
    assert CodecProfile.from_dict(old).rdo_lambda == 0.0
    for bad in (-1, 65, "0.1", True, float("inf")):
        with pytest.raises(CodecError, match="profile field 'rdo_lambda' must be a number in \\[0, 64.0\\]"):
            CodecProfile(Quantizer.uniform(-4, 4, 9), rdo_lambda=bad)


def test_the_profile_carries_per_channel_weights_checked() -> None:
    profile = CodecProfile(Quantizer.uniform(-4, 4, 9), rdo_lambda=0.05, rdo_weights={"x": [0.5, 1.5]})
    assert CodecProfile.from_json(profile.to_json()).rdo_weights == {"x": (0.5, 1.5)}
    for bad in ({"x": [1.0, -1.0]}, {"x": [float("nan")]}, {"x": []}, {"": [1.0]}, {"x": ["1"]}, {"x": [True]},
                [1.0], {"x": 1.0}):
        with pytest.raises(CodecError, match="profile field 'rdo_weights' must map tensor names to lists"):
            CodecProfile(Quantizer.uniform(-4, 4, 9), rdo_weights=bad)


def test_a_channel_the_tail_ignores_is_skipped_where_an_unweighted_one_is_sent() -> None:
    quantizer = Quantizer.uniform(-4.0, 4.0, 9)
    reference = np.full((1, 2, 6, 6), 4, np.uint8)
    values = np.zeros((1, 2, 6, 6), np.float32)
    values[0, :, :3, :3] = 0.9  # the same change in both channels
    encoder = TemporalEncoder(intra_period=10, rdo_lambda=0.02)
    encoder.commit(encoder.code({"x": np.zeros_like(values)}, {"x": quantizer}))
    unweighted = encoder.code({"x": values}, {"x": quantizer}).references["x"].levels
    np.testing.assert_array_equal(unweighted, quantizer.quantize(values))
    weighted = encoder.code({"x": values}, {"x": quantizer}, plane_weights={"x": [1.0, 0.01]}).references["x"].levels
    np.testing.assert_array_equal(weighted[0, 0], unweighted[0, 0])
    np.testing.assert_array_equal(weighted[0, 1], reference[0, 1])
