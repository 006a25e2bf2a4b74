"""Whole-tensor coding: what decode returns is exactly the quantizer's output; bad tensors get a CodecError."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitinfer.codec import (
    CODER_VERSION,
    CodecError,
    CodecLimits,
    Coder,
    CompressedTensor,
    Quantizer,
    decode,
    decode_levels,
    default_coder,
    encode,
    encode_levels,
)

from .strategies import shapes


@given(
    x=shapes(max_dims=4, max_side=7).flatmap(
        lambda shape: hnp.arrays(np.float32, shape, elements=st.floats(-20, 20, width=32))
    ),
    levels=st.integers(2, 16),
    clip=st.tuples(st.floats(-10, 0), st.floats(0.1, 10)),
    coder=st.sampled_from([None, *list(Coder)]),
)
@settings(max_examples=80, deadline=None)
def test_decode_returns_exactly_the_quantizer_reconstruction(x, levels, clip, coder) -> None:
    quantizer = Quantizer.uniform(clip[0], clip[1], levels)
    reference = quantizer.quantize(-x) if coder is Coder.TEMPORAL_CONTEXTS else None
    tensor = encode(x, quantizer, coder=coder, name="t", reference=reference)
    assert tensor.shape == x.shape and tensor.coder_version == CODER_VERSION
    assert tensor.payload_crc32 == zlib.crc32(tensor.payload)
    assert tensor.coder == (default_coder(quantizer) if coder is None else coder)
    decoded = decode(tensor, reference=reference)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, quantizer.dequantize(quantizer.quantize(x)))
    np.testing.assert_array_equal(decode_levels(tensor, reference=reference), quantizer.quantize(x))


def test_real_tensor_round_trip_and_size(activations) -> None:
    x = activations["layer80"]
    quantizer = Quantizer.uniform(-8.0, 8.0, 8)
    tensor = encode(x, quantizer, name="layer80")
    assert tensor.coder is Coder.SIGNED_NEIGHBOUR_CONTEXTS
    assert tensor.bits_per_element < 3.0
    np.testing.assert_array_equal(decode(tensor), quantizer.dequantize(quantizer.quantize(x)))


def test_default_coder_follows_the_tensor_kind() -> None:
    assert default_coder(Quantizer.uniform(0.0, 4.0, 4)) is Coder.NEIGHBOUR_CONTEXTS
    assert default_coder(Quantizer.uniform(-0.2, 4.0, 4)) is Coder.NEIGHBOUR_CONTEXTS  # leaky: 0 in level 0
    assert default_coder(Quantizer.uniform(-8.0, 8.0, 5)) is Coder.SIGNED_NEIGHBOUR_CONTEXTS


def test_nan_is_refused_and_infinities_clip_to_the_end_levels() -> None:
    quantizer = Quantizer.uniform(-1.0, 1.0, 4)
    with pytest.raises(CodecError, match="NaN"):
        encode(np.array([0.0, np.nan], np.float32), quantizer)
    tensor = encode(np.array([-np.inf, 0.2, np.inf], np.float32), quantizer)
    np.testing.assert_array_equal(decode(tensor), np.float32([-1.0, 1 / 3, 1.0]))


def test_encoder_refuses_what_it_cannot_code() -> None:
    quantizer = Quantizer.uniform(0.0, 1.0, 4)
    with pytest.raises(CodecError, match="above the limit of 10"):
        encode(np.zeros(11, np.float32), quantizer, limits=CodecLimits(max_elements=10))
    with pytest.raises(CodecError, match="real numbers"):
        encode(np.array(["a"]), quantizer)
    with pytest.raises(CodecError, match="Quantizer"):
        encode(np.zeros(3, np.float32), "uniform")  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="unknown entropy coder"):
        encode(np.zeros(3, np.float32), quantizer, coder=9)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="positive integer"):
        CodecLimits(max_elements=0)


@pytest.fixture(scope="module")
def coded() -> CompressedTensor:
    x = np.random.default_rng(3).normal(size=(2, 4, 16, 16)).astype(np.float32)
    return encode(x, Quantizer.uniform(-2.0, 2.0, 6), name="x")


def _forged(t: CompressedTensor, **changes) -> CompressedTensor:
    if "payload" in changes and "payload_crc32" not in changes:
        changes["payload_crc32"] = zlib.crc32(changes["payload"])
    return dataclasses.replace(t, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"coder_version": 2}, "coder version 2 is unknown"),
        ({"coder": 9}, "unknown entropy coder 9"),
        ({"payload_crc32": 0}, "fails its CRC-32 check"),
        ({"shape": (2, 4, 16, -16)}, "non-negative integers"),
        ({"shape": (2**20, 2**20)}, "above the limit"),
        ({"shape": (2, 4, 16, 15)}, "corrupted|does not decode"),
        ({"shape": (2000, 4, 16, 16)}, "cannot hold"),
        ({"shape": (1,)}, "too long"),
        ({"payload": b""}, "truncated"),
        ({"payload": b"\x01\x02"}, "truncated"),
        ({"name": 3}, "name must be a string"),
        ({"quantizer": None}, "must be a Quantizer"),
        ({"payload": "text"}, "payload must be bytes"),
    ],
)
def test_forged_tensors_raise_codec_error(coded: CompressedTensor, changes: dict, message: str) -> None:
    if changes.get("payload") == "text":
        forged = dataclasses.replace(coded, payload="text")
    else:
        forged = _forged(coded, **changes)
    with pytest.raises(CodecError, match=message):
        decode(forged)


def test_every_truncation_is_detected(coded: CompressedTensor) -> None:
    for length in range(len(coded.payload)):
        with pytest.raises(CodecError):
            decode(_forged(coded, payload=coded.payload[:length]))


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_flipped_bytes_never_decode_silently(coded: CompressedTensor, data) -> None:
    payload = bytearray(coded.payload)
    position = data.draw(st.integers(0, len(payload) - 1))
    payload[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CodecError, match="CRC-32"):
        decode(dataclasses.replace(coded, payload=bytes(payload)))


def test_decoder_refuses_a_shape_above_the_limit_before_decoding(coded: CompressedTensor) -> None:
    with pytest.raises(CodecError, match="above the limit of 100"):
        decode(coded, limits=CodecLimits(max_elements=100))


def test_encode_levels_equals_encode_and_keeps_the_reference_cheap() -> None:
    rng = np.random.default_rng(11)
    frames = rng.normal(size=(3, 2, 8, 8)).astype(np.float32)
    quantizer = Quantizer.uniform(-2.0, 2.0, 5)
    previous = None
    for frame in frames:
        levels = quantizer.quantize(frame)
        coder = Coder.TEMPORAL_CONTEXTS if previous is not None else None
        via_levels = encode_levels(levels, quantizer, coder=coder, name="f", reference=previous)
        assert via_levels == encode(frame, quantizer, coder=coder, name="f", reference=previous)
        np.testing.assert_array_equal(decode_levels(via_levels, reference=previous), levels)
        previous = levels
    with pytest.raises(CodecError, match="do not fit a 5-level"):
        encode_levels(np.full((2, 2), 5, np.uint8), quantizer)
    with pytest.raises(CodecError, match="integer array"):
        encode_levels(np.zeros((2, 2), np.float32), quantizer)
