"""TEMPORAL_CONTEXTS version 2 (plane skip + change from the reference): lossless, bit-identical to the reference
coder written from docs/BITSTREAM.md, and a forged payload never crashes it."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.codec import (
    CODER_VERSION,
    CodecError,
    CodecLimits,
    Coder,
    CompressedTensor,
    Quantizer,
    decode_indices,
    decode_levels,
    encode_indices,
    encode_levels,
    ideal_cost_bits,
)
from splitinfer.codec.entropy import INTER_VERSION, coder_versions

from .strategies import level_arrays

T = Coder.TEMPORAL_CONTEXTS


def _previous_frame(q: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A plausible previous frame: some planes unchanged, the others with a random share of levels moved."""
    rng = np.random.default_rng(seed)
    ref = q.copy()
    if q.ndim >= 2:
        moved = rng.random(q.shape[:-2] + (1, 1)) < rng.random()
        flips = (rng.random(q.shape) < rng.random()) & moved
    else:
        flips = rng.random(q.shape) < rng.random()
    ref[flips] = np.clip(ref[flips].astype(np.int64) + rng.integers(-3, 4, int(flips.sum())), 0, n - 1)
    return ref


def _v2(q: np.ndarray, n: int, ref: np.ndarray) -> bytes:
    return encode_indices(q, n, T, reference=ref, version=INTER_VERSION)


@given(case=level_arrays(), seed=st.integers(0, 2**16))
@settings(max_examples=80, deadline=None)
def test_version_2_is_lossless(case, seed: int) -> None:
    q, n = case
    ref = _previous_frame(q, n, seed)
    decoded = decode_indices(_v2(q, n, ref), q.shape, n, T, reference=ref, version=INTER_VERSION)
    assert decoded.dtype == np.uint8 and decoded.shape == q.shape
    np.testing.assert_array_equal(decoded, q)


@given(case=level_arrays(max_dims=3, max_side=6, levels=st.integers(2, 12)), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_version_2_payload_and_cost_match_the_reference_coder(naive, case, seed: int) -> None:
    q, n = case
    ref = _previous_frame(q, n, seed)
    expected_payload, expected_cost = naive.encode_inter(q, n, ref)
    payload = _v2(q, n, ref)
    assert payload == expected_payload
    assert ideal_cost_bits(q, n, T, reference=ref, version=INTER_VERSION) == pytest.approx(expected_cost, rel=1e-9,
                                                                                           abs=1e-9)
    np.testing.assert_array_equal(naive.decode_inter(payload, q.shape, n, ref), q)


def test_an_unchanged_tensor_costs_a_skip_bin_per_plane_not_a_bin_per_element() -> None:
    rng = np.random.default_rng(3)
    q = rng.integers(0, 13, (1, 48, 20, 20)).astype(np.uint8)
    v1 = encode_indices(q, 13, T, reference=q)
    v2 = _v2(q, 13, q)
    assert len(v2) <= 8 and len(v1) > 5 * len(v2)
    np.testing.assert_array_equal(decode_indices(v2, q.shape, 13, T, reference=q, version=INTER_VERSION), q)


def test_real_tensors_round_trip_close_to_their_ideal_cost(activations) -> None:
    for key, x in activations.items():
        lo, hi = np.percentile(x, [0.5, 99.5])
        q = np.clip(np.rint((x - lo) / (hi - lo) * 5), 0, 5).astype(np.uint8)
        ref = np.roll(q, 1, axis=0)
        payload = _v2(q, 6, ref)
        np.testing.assert_array_equal(decode_indices(payload, q.shape, 6, T, reference=ref, version=2), q)
        ideal = ideal_cost_bits(q, 6, T, reference=ref, version=INTER_VERSION)
        assert ideal <= 8 * len(payload) <= ideal * 1.01 + 64, key


def test_only_temporal_contexts_have_version_2() -> None:
    assert coder_versions(T) == (CODER_VERSION, INTER_VERSION)
    q = np.zeros((2, 3), np.uint8)
    for coder in (Coder.BIN_CONTEXTS, Coder.NEIGHBOUR_CONTEXTS, Coder.SIGNED_NEIGHBOUR_CONTEXTS):
        assert coder_versions(coder) == (CODER_VERSION,)
        with pytest.raises(CodecError, match="coder version 2 is unknown"):
            encode_indices(q, 4, coder, version=2)
        with pytest.raises(CodecError, match="coder version 2 is unknown"):
            decode_indices(b"\x00" * 4, q.shape, 4, coder, version=2)
    for version in (0, 3, True, "2"):
        with pytest.raises(CodecError, match="is unknown"):
            encode_indices(q, 4, T, reference=q, version=version)
    with pytest.raises(CodecError, match="reference"):
        decode_indices(_v2(q, 4, q), q.shape, 4, T, version=INTER_VERSION)


def test_compressed_tensors_carry_the_version_and_version_1_still_decodes() -> None:
    quantizer = Quantizer.uniform(-1.0, 1.0, 5)
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 5, (1, 4, 6, 6)).astype(np.uint8)
    q = _previous_frame(ref, 5, 9)
    v1 = encode_levels(q, quantizer, coder=T, reference=ref)
    v2 = encode_levels(q, quantizer, coder=T, reference=ref, coder_version=INTER_VERSION)
    assert (v1.coder_version, v2.coder_version) == (1, 2) and v1.payload != v2.payload
    for tensor in (v1, v2):
        np.testing.assert_array_equal(decode_levels(tensor, reference=ref), q)
    swapped = dataclasses.replace(v2, coder_version=1)
    try:  # a v2 payload read as v1 is refused or decodes to some valid levels, never crashes
        assert int(decode_levels(swapped, reference=ref).max()) < 5
    except CodecError:
        pass
    forged = dataclasses.replace(v2, coder=Coder.NEIGHBOUR_CONTEXTS)
    with pytest.raises(CodecError, match="coder version 2 is unknown"):
        forged.validate()


@given(case=level_arrays(max_side=8), seed=st.integers(0, 2**16), data=st.data())
@settings(max_examples=120, deadline=None)
def test_flipped_truncated_or_extended_payloads_never_crash(case, seed: int, data) -> None:
    q, n = case
    ref = _previous_frame(q, n, seed)
    payload = _v2(q, n, ref)
    flipped = bytearray(payload)
    flipped[data.draw(st.integers(0, len(payload) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode_indices(bytes(flipped), q.shape, n, T, reference=ref, version=INTER_VERSION)
        assert decoded.shape == q.shape and (decoded.size == 0 or int(decoded.max()) < n)
    except CodecError as exc:
        assert str(exc)
    with pytest.raises(CodecError):
        decode_indices(payload[:data.draw(st.integers(0, len(payload) - 1))], q.shape, n, T, reference=ref,
                       version=INTER_VERSION)
    with pytest.raises(CodecError):
        decode_indices(payload + data.draw(st.binary(min_size=1, max_size=8)), q.shape, n, T, reference=ref,
                       version=INTER_VERSION)


@given(payload=st.binary(max_size=64), shape=st.lists(st.integers(0, 40), max_size=4).map(tuple),
       levels=st.integers(2, 256), fill=st.integers(0, 255))
@settings(max_examples=200, deadline=None)
def test_random_bytes_never_crash_the_decoder(payload: bytes, shape, levels: int, fill: int) -> None:
    reference = np.full(shape, fill % levels, np.uint8)
    try:
        decoded = decode_indices(payload, shape, levels, T, reference=reference, version=INTER_VERSION)
    except CodecError as exc:
        assert str(exc)
        return
    assert decoded.shape == shape and (decoded.size == 0 or int(decoded.max()) < levels)


def test_size_and_work_limits() -> None:
    ref = np.zeros((64, 64), np.uint8)
    q = np.where(np.arange(4096).reshape(64, 64) % 3, 0, 255).astype(np.uint8)
    payload = _v2(q, 256, ref)
    np.testing.assert_array_equal(decode_indices(payload, q.shape, 256, T, reference=ref, version=2), q)
    with pytest.raises(CodecError, match="more than 1000 bins"):
        decode_indices(payload, q.shape, 256, T, reference=ref, version=2, limits=CodecLimits(max_bins=1000))
    with pytest.raises(CodecError, match="truncated"):
        decode_indices(payload[:3], q.shape, 256, T, reference=ref, version=2)
    with pytest.raises(CodecError, match="too long"):
        decode_indices(b"\x00" * 400, (2, 2), 4, T, reference=np.zeros((2, 2), np.uint8), version=2)
    planes = (2**20, 1, 1)  # every plane codes at least its skip bin
    with pytest.raises(CodecError, match="cannot hold"):
        decode_indices(b"\x00" * 8, planes, 4, T, reference=np.zeros(planes, np.uint8), version=2)
    # An unchanged 2**24-element tensor of one plane is a handful of bytes: legitimately far below 1 bit/element.
    big = np.ones((1, 4096, 4096), np.uint8)
    tiny = _v2(big, 4, big)
    assert len(tiny) <= 5
    np.testing.assert_array_equal(decode_indices(tiny, big.shape, 4, T, reference=big, version=2), big)


def test_crc_is_checked_for_version_2() -> None:
    quantizer = Quantizer.uniform(-1.0, 1.0, 5)
    ref = np.zeros((1, 2, 4, 4), np.uint8)
    tensor = encode_levels(ref + 1, quantizer, coder=T, reference=ref, coder_version=INTER_VERSION)
    bad = CompressedTensor(tensor.name, tensor.shape, quantizer, T, INTER_VERSION, tensor.payload,
                           zlib.crc32(tensor.payload) ^ 1)
    with pytest.raises(CodecError, match="CRC-32"):
        decode_levels(bad, reference=ref)


def test_temporal_encoder_sends_version_2_smaller_than_version_1_on_a_partly_static_scene(activations) -> None:
    from splitinfer.codec import TemporalEncoder

    x = activations["layer80"][:1]
    quantizer = Quantizer.uniform(-12.0, 12.0, 9)
    moving = x.copy()
    moving[:, ::4] += np.random.default_rng(2).normal(0, 1.0, moving[:, ::4].shape).astype(np.float32)
    encoder = TemporalEncoder(intra_period=30, hysteresis=0.1)
    first, intra = encoder.encode_frame({"t": x}, {"t": quantizer})
    second, inter = encoder.encode_frame({"t": moving}, {"t": quantizer})
    assert intra and not inter
    reference = decode_levels(first["t"])
    tensor = second["t"]
    assert (tensor.coder, tensor.coder_version) == (T, INTER_VERSION)
    levels = decode_levels(tensor, reference=reference)
    version_1 = encode_indices(levels, 9, T, reference=reference)
    assert tensor.nbytes < 0.8 * len(version_1)
