"""Quantizer: clip + N-level mapping; the compiled kernel agrees with numpy's searchsorted everywhere."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitinfer.codec import CodecError, Quantizer, QuantizerKind

from .strategies import shapes


@given(
    x=shapes(max_dims=3, max_side=12).flatmap(
        lambda shape: hnp.arrays(np.float32, shape, elements=st.floats(allow_nan=False, width=32))
    ),
    levels=st.one_of(st.integers(2, 9), st.integers(2, 256)),
    low=st.floats(-100, 0),
    span=st.floats(0.5, 100),
)
@settings(max_examples=150, deadline=None)
def test_quantize_counts_thresholds_below_each_value(x, levels: int, low: float, span: float) -> None:
    quantizer = Quantizer.uniform(low, low + span, levels)
    expected = np.searchsorted(np.float32(quantizer.thresholds), x, side="left").astype(np.uint8)
    got = quantizer.quantize(x)
    assert got.shape == x.shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    if x.ndim == 2:
        np.testing.assert_array_equal(quantizer.quantize(x.T), expected.T)  # non-contiguous input


def test_values_on_a_threshold_go_to_the_lower_level_and_infinities_clip() -> None:
    quantizer = Quantizer.uniform(0.0, 3.0, 4)
    values = np.float32([-np.inf, -5.0, 0.5, 0.50001, 1.5, 99.0, np.inf])
    np.testing.assert_array_equal(quantizer.quantize(values), [0, 0, 0, 1, 1, 3, 3])
    np.testing.assert_array_equal(quantizer.dequantize(quantizer.quantize(values)), np.float32([0, 0, 0, 1, 1, 3, 3]))


def test_nan_is_refused_with_a_reason() -> None:
    with pytest.raises(CodecError, match="NaN"):
        Quantizer.uniform(0.0, 1.0, 4).quantize(np.float32([0.2, np.nan]))


def test_values_are_stored_as_the_float32_the_codec_uses() -> None:
    quantizer = Quantizer(QuantizerKind.ECSQ, 0.0, 1.1, (0.5,), (0.1, 1.0))
    assert quantizer.clip_max == float(np.float32(1.1)) and quantizer.reconstruction[0] == float(np.float32(0.1))
    assert Quantizer("ecsq", 0.0, 1.1, (0.5,), (0.1, 1.0)) == quantizer


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((QuantizerKind.UNIFORM, 0.0, 1.0, (0.5,), (0.0,)), "needs 2..256 levels"),
        ((QuantizerKind.UNIFORM, 0.0, 1.0, (), (0.0, 1.0)), "need 1 thresholds"),
        ((QuantizerKind.UNIFORM, 0.0, 1.0, (0.5,), (1.0, 0.0)), "ascending"),
        ((QuantizerKind.UNIFORM, 1.0, 1.0, (0.5,), (0.0, 1.0)), "clip_min"),
        ((QuantizerKind.UNIFORM, 0.0, np.inf, (0.5,), (0.0, 1.0)), "finite"),
        ((QuantizerKind.UNIFORM, 0.0, 1e39, (0.5,), (0.0, 1.0)), "fit in float32"),
        ((QuantizerKind.UNIFORM, 0.0, 1.0, "ab", (0.0, 1.0)), "sequence of numbers"),
        ((QuantizerKind.UNIFORM, 0.0, 1.0, (None,), (0.0, 1.0)), "must all be numbers"),
        ((7, 0.0, 1.0, (0.5,), (0.0, 1.0)), "unknown quantizer kind 7"),
    ],
)
def test_invalid_quantizers_are_refused(args, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        Quantizer(*args)


def test_signed_tensor_kind_follows_the_level_of_zero() -> None:
    assert Quantizer.uniform(-4.0, 4.0, 5).zero_level == 2 and Quantizer.uniform(-4.0, 4.0, 5).signed
    assert Quantizer.uniform(0.0, 4.0, 5).zero_level == 0 and not Quantizer.uniform(0.0, 4.0, 5).signed


@given(levels=st.integers(34, 256), seed=st.integers(0, 2**32 - 1), spread=st.floats(0.1, 10.0))
@settings(max_examples=60, deadline=None)
def test_many_uneven_thresholds_are_counted_exactly(levels: int, seed: int, spread: float) -> None:
    """Above 32 thresholds the kernel guesses a level from their mean spacing and walks to the exact count: uneven
    (ECSQ-like, even repeated) thresholds, values on them and one float32 step either side, as searchsorted."""
    rng = np.random.default_rng(seed)
    thresholds = np.sort(np.float32(np.cumsum(rng.exponential(spread, levels - 1) * (rng.random(levels - 1) > 0.1))))
    reconstruction = np.concatenate([[thresholds[0] - 1], (thresholds[:-1] + thresholds[1:]) / 2,
                                     [thresholds[-1] + 1]]).astype(np.float32)
    reconstruction = np.maximum.accumulate(reconstruction)
    quantizer = Quantizer(QuantizerKind.ECSQ, float(reconstruction[0]), float(reconstruction[-1]) + 1.0,
                          tuple(float(t) for t in thresholds), tuple(float(r) for r in reconstruction))
    x = np.concatenate([thresholds, np.nextafter(thresholds, np.float32(np.inf)),
                        np.nextafter(thresholds, np.float32(-np.inf)), rng.normal(thresholds.mean(), thresholds.std()
                                                                                   + 1, 500).astype(np.float32),
                        np.float32([np.inf, -np.inf, 3e38, -3e38])])
    np.testing.assert_array_equal(quantizer.quantize(x), np.searchsorted(quantizer._thresholds32, x, side="left"))
