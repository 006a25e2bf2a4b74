"""The modified ECSQ: Lloyd-style design of distortion + lambda x rate with the clip ends kept as levels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from splitinfer.codec import CodecError, Quantizer, QuantizerKind
from splitinfer.codec.clip_range import mse_optimal_range
from splitinfer.codec.ecsq import design_ecsq, ecsq_sweep
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def layer80() -> np.ndarray:
    with np.load(shared_path("activations", "yolo-fastest-1.1-xl.npz")) as data:
        return data["layer80"]


def entropy_bits(indices: np.ndarray, levels: int) -> float:
    p = np.bincount(indices.ravel(), minlength=levels) / indices.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def exact_mse(values: np.ndarray, quantizer: Quantizer) -> float:
    return float(np.mean((quantizer.dequantize(quantizer.quantize(values)) - values) ** 2))


def test_lambda_zero_is_lloyd_max_and_beats_uniform_levels(layer80):
    chosen = mse_optimal_range(layer80, 7)
    uniform = Quantizer.uniform(chosen.clip_min, chosen.clip_max, 7)
    design = design_ecsq(layer80, 7, chosen.clip_min, chosen.clip_max, lam=0.0)
    assert design.quantizer.kind is QuantizerKind.ECSQ
    assert exact_mse(layer80, design.quantizer) < exact_mse(layer80, uniform)
    assert design.mse == pytest.approx(exact_mse(layer80, design.quantizer), rel=1e-3)


def test_clipping_point_masses_stay_reconstruction_levels(layer80):
    design = design_ecsq(layer80, 5, -6.0, 6.0, lam=2.0)
    quantizer = design.quantizer
    assert quantizer.reconstruction[0] == -6.0 and quantizer.reconstruction[-1] == 6.0
    clipped = layer80[np.abs(layer80) >= 6.0]
    assert clipped.size > 0
    indices = quantizer.quantize(clipped)
    assert set(np.unique(indices)) == {0, 4}
    assert np.array_equal(quantizer.dequantize(indices), np.sign(clipped) * 6.0)


def test_raising_lambda_trades_distortion_for_rate(layer80):
    designs = ecsq_sweep(layer80, 7, -7.0, 7.0, [0.0, 0.3, 1.0, 3.0, 10.0])
    rates = [d.entropy_bits for d in designs]
    errors = [d.mse for d in designs]
    assert all(a >= b - 1e-6 for a, b in zip(rates, rates[1:]))
    assert all(a <= b + 1e-6 for a, b in zip(errors, errors[1:]))
    assert rates[-1] < rates[0] - 0.3
    for design in designs:  # the reported rate is the real entropy of the levels on these values
        assert design.entropy_bits == pytest.approx(entropy_bits(design.quantizer.quantize(layer80), 7), abs=0.01)


def test_weighted_distortion_protects_large_activations(layer80):
    magnitude = np.abs(layer80)
    large = layer80[(magnitude > np.percentile(magnitude, 80)) & (magnitude < 7.0)]  # large, not clipped
    plain = design_ecsq(layer80, 5, -7.0, 7.0, lam=1.0)
    weighted = design_ecsq(layer80, 5, -7.0, 7.0, lam=1.0, weight_power=2.0)
    assert exact_mse(large, weighted.quantizer) < exact_mse(large, plain.quantizer)
    assert weighted.weight_power == 2.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(levels=1), "levels"),
        (dict(clip_min=1.0, clip_max=-1.0), "clip range"),
        (dict(clip_max=float("inf")), "clip range"),
        (dict(lam=-1.0), "lambda"),
        (dict(lam=float("nan")), "lambda"),
        (dict(weight_power=-1.0), "weight_power"),
    ],
)
def test_bad_parameters_get_a_clear_error(kwargs, message):
    args = dict(values=np.linspace(-1, 1, 100), levels=4, clip_min=-1.0, clip_max=1.0, lam=1.0) | kwargs
    with pytest.raises(CodecError, match=message):
        design_ecsq(**args)


def test_nan_calibration_values_are_refused():
    with pytest.raises(CodecError, match="NaN"):
        design_ecsq(np.array([0.0, np.nan, 1.0]), 3, 0.0, 1.0, lam=1.0)


@settings(max_examples=40, deadline=None)
@given(
    values=arrays(np.float32, st.integers(1, 400), elements=st.floats(-50, 50, width=32)),
    levels=st.integers(2, 8),
    lam=st.floats(0, 20),
    weight_power=st.floats(0, 3),
)
def test_any_calibration_set_yields_a_valid_quantizer(values, levels, lam, weight_power):
    design = design_ecsq(values, levels, -10.0, 10.0, lam=lam, weight_power=weight_power)
    quantizer = design.quantizer
    assert quantizer.levels == levels
    assert quantizer.reconstruction[0] == -10.0 and quantizer.reconstruction[-1] == 10.0
    assert all(-10.0 < t < 10.0 for t in quantizer.thresholds)
    assert abs(sum(design.probabilities) - 1.0) < 1e-9
    indices = quantizer.quantize(values)
    assert indices.max(initial=0) < levels
