"""Temporal hysteresis: quantize against the previous frame's levels, keeping them near cell boundaries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.codec import CodecError, Quantizer, QuantizerKind, quantize_with_reference
from splitinfer.codec.clip_range import ValueHistogram
from splitinfer.codec.ecsq import design_ecsq

from .strategies import inter_frames


@given(frame=inter_frames())
@settings(max_examples=100, deadline=None)
def test_margin_zero_is_plain_quantize(frame) -> None:
    quantizer, values, reference = frame
    np.testing.assert_array_equal(quantize_with_reference(values, quantizer, reference, 0.0), quantizer.quantize(values))


@given(frame=inter_frames(), margin=st.floats(0.0, 1.0))
@settings(max_examples=150, deadline=None)
def test_levels_differ_from_plain_quantize_only_by_keeping_the_reference(frame, margin: float) -> None:
    quantizer, values, reference = frame
    plain = quantizer.quantize(values)
    got = quantize_with_reference(values, quantizer, reference, margin)
    assert got.shape == values.shape and got.dtype == np.uint8
    assert np.all((got == plain) | (got == reference))
    # A larger margin keeps every reference level a smaller one kept.
    wider = quantize_with_reference(values, quantizer, reference, min(1.0, margin + 0.25))
    assert np.all(wider[got == reference] == reference[got == reference])


@given(frame=inter_frames(), margin=st.floats(0.0, 1.0))
@settings(max_examples=150, deadline=None)
def test_error_stays_within_half_a_step_plus_the_margin(frame, margin: float) -> None:
    quantizer, values, reference = frame
    step = (quantizer.clip_max - quantizer.clip_min) / (quantizer.levels - 1)
    clipped = np.clip(values.astype(np.float64), quantizer.clip_min, quantizer.clip_max)
    error = np.abs(quantizer.dequantize(quantize_with_reference(values, quantizer, reference, margin)) - clipped)
    assert error.max() <= (0.5 + margin) * step * (1 + 1e-5) + 1e-5


def test_the_margin_counts_in_steps_on_the_side_the_value_left_by() -> None:
    # Non-uniform levels 0, 1, 3 (thresholds 0.5, 2): a step is 1 below level 1 and 2 above it.
    quantizer = Quantizer(QuantizerKind.ECSQ, 0.0, 3.0, (0.5, 2.0), (0.0, 1.0, 3.0))
    values = np.float32([0.41, 0.39, 2.39, 2.41])
    reference = np.uint8([1, 1, 1, 1])
    np.testing.assert_array_equal(quantize_with_reference(values, quantizer, reference, 0.1), [1, 0, 2, 2])
    np.testing.assert_array_equal(quantize_with_reference(values, quantizer, reference, 0.2), [1, 1, 1, 2])


def test_flicker_around_a_threshold_is_held_and_real_changes_pass() -> None:
    quantizer = Quantizer.uniform(-4.0, 4.0, 9)  # step 1, thresholds at +-0.5, +-1.5, ...
    reference = quantizer.quantize(np.float32([0.45, 0.45, -1.45, 3.0]))
    values = np.float32([0.55, 1.2, -1.6, 2.2])
    np.testing.assert_array_equal(quantize_with_reference(values, quantizer, reference, 0.2), [4, 5, 3, 6])


def test_works_with_designed_ecsq_levels() -> None:
    rng = np.random.default_rng(1)
    samples = rng.laplace(0, 1, 20_000).astype(np.float32)
    quantizer = design_ecsq(ValueHistogram.of(samples), 9, -6.0, 6.0, lam=1.0).quantizer
    previous = samples[:4096].reshape(4, 32, 32)
    values = previous + rng.normal(0, 0.05, previous.shape).astype(np.float32)
    reference = quantizer.quantize(previous)
    plain = quantizer.quantize(values)
    held = quantize_with_reference(values, quantizer, reference, 0.25)
    assert (held != reference).sum() < (plain != reference).sum()
    assert np.all((held == plain) | (held == reference))


@pytest.mark.parametrize(
    ("values", "reference", "margin", "message"),
    [
        (np.zeros((2, 3), np.float32), np.zeros((3, 2), np.uint8), 0.1, "shape \\(3, 2\\) but the tensor has shape"),
        (np.zeros(3, np.float32), np.uint8([0, 9, 1]), 0.1, "do not fit a 9-level quantizer"),
        (np.zeros(3, np.float32), np.int16([0, -1, 1]), 0.1, "do not fit a 9-level quantizer"),
        (np.zeros(3, np.float32), np.float32([0, 1, 1]), 0.1, "must be integers"),
        (np.float32([0.0, np.nan]), np.uint8([4, 4]), 0.1, "NaN"),
        (np.array(["a", "b"]), np.uint8([4, 4]), 0.1, "real numbers"),
        (np.zeros(3, np.float32), np.uint8([4, 4, 4]), -0.1, "margin must be a number of steps in \\[0, 1.0\\]"),
        (np.zeros(3, np.float32), np.uint8([4, 4, 4]), 1.5, "margin must be"),
        (np.zeros(3, np.float32), np.uint8([4, 4, 4]), float("nan"), "margin must be"),
        (np.zeros(3, np.float32), np.uint8([4, 4, 4]), True, "margin must be"),
        (np.zeros(3, np.float32), np.uint8([4, 4, 4]), "0.1", "margin must be"),
    ],
)
def test_bad_input_is_refused_with_a_reason(values, reference, margin, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        quantize_with_reference(values, Quantizer.uniform(-4.0, 4.0, 9), reference, margin)


def test_a_quantizer_is_required() -> None:
    with pytest.raises(CodecError, match="must be a splitinfer.codec.Quantizer"):
        quantize_with_reference(np.zeros(2, np.float32), "uniform", np.zeros(2, np.uint8), 0.1)
