"""Clip-range selection: percentile, MSE-optimal for N uniform levels, and a loss-driven search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from splitinfer.codec import CodecError, Quantizer
from splitinfer.codec.clip_range import (
    ClipRange,
    ValueHistogram,
    mse_optimal_range,
    percentile_range,
    scaled_candidates,
    search_range,
)
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def activations() -> dict[str, np.ndarray]:
    with np.load(shared_path("activations", "yolo-fastest-1.1-xl.npz")) as data:
        return {key: data[key] for key in ("layer59", "layer80")}


def exact_mse(values: np.ndarray, quantizer: Quantizer) -> float:
    return float(np.mean((quantizer.dequantize(quantizer.quantize(values)) - values) ** 2))


def test_percentile_range_matches_numpy_percentiles(activations):
    values = activations["layer59"]
    chosen = percentile_range(values, 0.1, 99.9)
    width = float(values.max() - values.min()) / 8192  # pytest refuses numpy scalars as tolerances
    assert chosen.clip_min == pytest.approx(float(np.percentile(values, 0.1)), abs=2 * width)
    assert chosen.clip_max == pytest.approx(float(np.percentile(values, 99.9)), abs=2 * width)


@pytest.mark.parametrize("layer", ["layer59", "layer80"])
@pytest.mark.parametrize("levels", [4, 7])
def test_mse_optimal_range_beats_percentile_and_full_ranges(activations, layer, levels):
    values = activations[layer]
    best = mse_optimal_range(values, levels)
    best_mse = exact_mse(values, Quantizer.uniform(best.clip_min, best.clip_max, levels))
    assert best.score == pytest.approx(best_mse, rel=1e-3)  # the histogram measures the real error
    for low, high in [(0.0, 100.0), (0.01, 99.99), (1.0, 99.0)]:
        other = percentile_range(values, low, high)
        assert best_mse <= exact_mse(values, Quantizer.uniform(other.clip_min, other.clip_max, levels))


def test_symmetric_range_gives_odd_level_counts_an_exact_zero(activations):
    chosen = mse_optimal_range(activations["layer80"], 5, symmetric=True)
    assert chosen.clip_min == -chosen.clip_max
    quantizer = Quantizer.uniform(chosen.clip_min, chosen.clip_max, 5)
    assert 0.0 in quantizer.reconstruction
    assert quantizer.dequantize(quantizer.quantize(np.zeros(3, np.float32))).tolist() == [0.0, 0.0, 0.0]


def test_search_range_picks_the_least_loss_and_reports_it():
    candidates = scaled_candidates(ClipRange(-1.0, 2.0, "base"), [0.5, 1.0, 2.0, 4.0])
    assert candidates[2] == (-2.0, 4.0)
    chosen = search_range(lambda lo, hi: abs(hi - 4.0), candidates, "distance to 4")
    assert (chosen.clip_min, chosen.clip_max, chosen.score, chosen.method) == (-2.0, 4.0, 0.0, "distance to 4")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ValueHistogram.of(np.array([1.0, np.nan])), "NaN"),
        (lambda: ValueHistogram.of(np.array([])), "no calibration values"),
        (lambda: percentile_range(np.arange(10.0), 99.0, 1.0), "percentiles"),
        (lambda: percentile_range(np.ones(10), 1.0, 99.0), "constant"),
        (lambda: search_range(lambda lo, hi: 0.0, []), "at least one"),
        (lambda: search_range(lambda lo, hi: float("nan"), [(0.0, 1.0)]), "NaN"),
        (lambda: ClipRange(1.0, 1.0, "x"), "clip_min < clip_max"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(CodecError, match=message):
        call()


finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(values=arrays(np.float32, st.integers(2, 300), elements=finite), levels=st.integers(2, 9))
def test_any_tensor_gets_a_valid_range_inside_its_values(values, levels):
    if values.min() == values.max():
        with pytest.raises(CodecError):
            percentile_range(values)
        return
    for chosen in (percentile_range(values), mse_optimal_range(values, levels, candidates=8)):
        assert values.min() - 1e-3 <= chosen.clip_min < chosen.clip_max <= values.max() + 1e-3 + abs(values.max()) * 1e-5
