"""Entropy coding of level indices: lossless for every coder, bit-identical to the reference coder."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.codec import CodecError, Coder, decode_indices, encode_indices, ideal_cost_bits

from .strategies import level_arrays

INTRA = [Coder.BIN_CONTEXTS, Coder.NEIGHBOUR_CONTEXTS, Coder.SIGNED_NEIGHBOUR_CONTEXTS]


def _reference_for(q: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A plausible previous frame: the same levels with a few changed."""
    rng = np.random.default_rng(seed)
    ref = q.copy()
    flips = rng.random(q.shape) < 0.1
    ref[flips] = rng.integers(0, n, int(flips.sum()))
    return ref


@pytest.mark.parametrize("coder", INTRA)
@given(case=level_arrays())
@settings(max_examples=60, deadline=None)
def test_every_intra_coder_is_lossless(coder: Coder, case) -> None:
    q, n = case
    payload = encode_indices(q, n, coder)
    decoded = decode_indices(payload, q.shape, n, coder)
    assert decoded.dtype == np.uint8 and decoded.shape == q.shape
    np.testing.assert_array_equal(decoded, q)


@given(case=level_arrays(), seed=st.integers(0, 2**16))
@settings(max_examples=60, deadline=None)
def test_temporal_coder_is_lossless_and_agrees_with_intra(case, seed: int) -> None:
    q, n = case
    ref = _reference_for(q, n, seed)
    inter = decode_indices(encode_indices(q, n, Coder.TEMPORAL_CONTEXTS, reference=ref), q.shape, n,
                           Coder.TEMPORAL_CONTEXTS, reference=ref)
    intra = decode_indices(encode_indices(q, n, Coder.NEIGHBOUR_CONTEXTS), q.shape, n, Coder.NEIGHBOUR_CONTEXTS)
    np.testing.assert_array_equal(inter, q)
    np.testing.assert_array_equal(inter, intra)


@pytest.mark.parametrize("coder", list(Coder))
@given(case=level_arrays(max_dims=3, max_side=6, levels=st.integers(2, 12)), seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_payload_and_cost_match_the_reference_coder(naive, coder: Coder, case, seed: int) -> None:
    q, n = case
    ref = _reference_for(q, n, seed) if coder is Coder.TEMPORAL_CONTEXTS else None
    expected_payload, expected_cost = naive.encode(q, n, int(coder), ref)
    assert encode_indices(q, n, coder, reference=ref) == expected_payload
    assert ideal_cost_bits(q, n, coder, reference=ref) == pytest.approx(expected_cost, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("coder", [Coder.BIN_CONTEXTS, Coder.NEIGHBOUR_CONTEXTS, Coder.TEMPORAL_CONTEXTS])
def test_reference_decoder_reads_the_kernel_payload(naive, coder: Coder) -> None:
    rng = np.random.default_rng(7)
    q = np.minimum(rng.geometric(0.5, (3, 5, 6)) - 1, 5).astype(np.uint8)
    ref = _reference_for(q, 6, 1) if coder is Coder.TEMPORAL_CONTEXTS else None
    payload = encode_indices(q, 6, coder, reference=ref)
    np.testing.assert_array_equal(naive.decode_tu(payload, q.shape, 6, int(coder), ref), q)


@pytest.mark.parametrize("coder", list(Coder))
def test_real_tensors_round_trip_close_to_their_ideal_cost(activations, coder: Coder) -> None:
    for key, x in activations.items():
        lo, hi = np.percentile(x, [0.5, 99.5])
        levels = 6
        q = np.clip(np.rint((x - lo) / (hi - lo) * (levels - 1)), 0, levels - 1).astype(np.uint8)
        ref = np.roll(q, 1, axis=0) if coder is Coder.TEMPORAL_CONTEXTS else None
        payload = encode_indices(q, levels, coder, reference=ref)
        np.testing.assert_array_equal(decode_indices(payload, q.shape, levels, coder, reference=ref), q)
        ideal = ideal_cost_bits(q, levels, coder, reference=ref)
        assert ideal <= 8 * len(payload) <= ideal * 1.01 + 64, key


def test_neighbour_contexts_beat_bin_contexts_on_real_tensors(activations) -> None:
    for key, x in activations.items():
        hi = np.percentile(x, 99.5)
        q = np.clip(np.rint(np.maximum(x, 0) / hi * 3), 0, 3).astype(np.uint8)
        plain = len(encode_indices(q, 4, Coder.BIN_CONTEXTS))
        neighbour = len(encode_indices(q, 4, Coder.NEIGHBOUR_CONTEXTS))
        assert neighbour < 0.97 * plain, key


def test_temporal_contexts_need_a_reference_and_only_they_take_one() -> None:
    q = np.zeros((2, 3), np.uint8)
    with pytest.raises(CodecError, match="reference"):
        encode_indices(q, 4, Coder.TEMPORAL_CONTEXTS)
    with pytest.raises(CodecError, match="only used by TEMPORAL_CONTEXTS"):
        encode_indices(q, 4, Coder.NEIGHBOUR_CONTEXTS, reference=q)
    with pytest.raises(CodecError, match="shape"):
        encode_indices(q, 4, Coder.TEMPORAL_CONTEXTS, reference=np.zeros((3, 2), np.uint8))
    with pytest.raises(CodecError, match="reference holds level indices"):
        encode_indices(q, 4, Coder.TEMPORAL_CONTEXTS, reference=np.full((2, 3), 4, np.uint8))
    payload = encode_indices(q, 4, Coder.TEMPORAL_CONTEXTS, reference=q)
    with pytest.raises(CodecError, match="reference"):
        decode_indices(payload, q.shape, 4, Coder.TEMPORAL_CONTEXTS)


@pytest.mark.parametrize(
    ("indices", "levels", "coder", "message"),
    [
        (np.array([0, 4]), 4, Coder.BIN_CONTEXTS, "level indices 0..4"),
        (np.array([-1, 0]), 4, Coder.BIN_CONTEXTS, "level indices -1..0"),
        (np.array([0.5]), 4, Coder.BIN_CONTEXTS, "integer array"),
        (np.array([0]), 1, Coder.BIN_CONTEXTS, "levels must be an integer in 2..256"),
        (np.array([0]), 257, Coder.BIN_CONTEXTS, "levels must be an integer in 2..256"),
        (np.array([0]), 4, 7, "unknown entropy coder"),
        (np.array([0]), 4, "ZSTD", "unknown entropy coder"),
    ],
)
def test_bad_encoder_input_is_refused(indices, levels, coder, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        encode_indices(indices, levels, coder)
