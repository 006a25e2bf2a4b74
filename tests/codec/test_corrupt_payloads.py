"""A damaged or forged payload never crashes, hangs or returns out-of-range levels: CodecError or a valid array.

Without the CRC (decode_indices on raw bytes) a flipped byte can still decode to some array of the right
shape; with it (decode of a CompressedTensor, test_tensor.py) every flip is caught.
"""

from __future__ import annotations

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
    decode,
    decode_indices,
    encode_indices,
)

from .strategies import level_arrays

_INTRA = st.sampled_from([Coder.BIN_CONTEXTS, Coder.NEIGHBOUR_CONTEXTS, Coder.SIGNED_NEIGHBOUR_CONTEXTS])


def _decode_or_refuse(payload: bytes, shape: tuple[int, ...], levels: int, coder: Coder) -> np.ndarray | None:
    try:
        decoded = decode_indices(payload, shape, levels, coder)
    except CodecError as exc:
        assert str(exc)
        return None
    assert decoded.shape == shape and decoded.dtype == np.uint8
    assert decoded.size == 0 or int(decoded.max()) < levels
    return decoded


@given(case=level_arrays(max_side=8), coder=_INTRA, data=st.data())
@settings(max_examples=150, deadline=None)
def test_flipped_bytes_decode_to_valid_levels_or_raise(case, coder: Coder, data) -> None:
    q, n = case
    payload = bytearray(encode_indices(q, n, coder))
    position = data.draw(st.integers(0, len(payload) - 1))
    payload[position] ^= data.draw(st.integers(1, 255))
    _decode_or_refuse(bytes(payload), q.shape, n, coder)


@given(case=level_arrays(max_side=8), coder=_INTRA, data=st.data())
@settings(max_examples=100, deadline=None)
def test_every_truncation_or_extension_is_refused(case, coder: Coder, data) -> None:
    q, n = case
    payload = encode_indices(q, n, coder)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(CodecError):
        decode_indices(payload[:cut], q.shape, n, coder)
    with pytest.raises(CodecError):
        decode_indices(payload + data.draw(st.binary(min_size=1, max_size=8)), q.shape, n, coder)


@given(payload=st.binary(max_size=64), shape=st.lists(st.integers(0, 40), max_size=4).map(tuple),
       levels=st.integers(2, 256), coder=st.sampled_from(list(Coder)))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_crash_the_decoder(payload: bytes, shape, levels: int, coder: Coder) -> None:
    if coder is Coder.TEMPORAL_CONTEXTS:
        reference = np.zeros(shape, np.uint8)
        try:
            decoded = decode_indices(payload, shape, levels, coder, reference=reference)
        except CodecError:
            return
        assert decoded.shape == shape and (decoded.size == 0 or int(decoded.max()) < levels)
    else:
        _decode_or_refuse(payload, shape, levels, coder)


def test_a_tiny_payload_cannot_claim_a_huge_tensor() -> None:
    with pytest.raises(CodecError, match="cannot hold"):
        decode_indices(b"\x00" * 8, (4096, 4096), 4, Coder.BIN_CONTEXTS)
    with pytest.raises(CodecError, match="above the limit of 1000"):
        decode_indices(b"\x00" * 8, (40, 40), 4, Coder.BIN_CONTEXTS, limits=CodecLimits(max_elements=1000))


def test_signed_payload_naming_a_missing_level_is_refused() -> None:
    payload = encode_indices(np.zeros((4, 4), np.uint8), 4, Coder.SIGNED_NEIGHBOUR_CONTEXTS)
    with pytest.raises(CodecError, match="most probable level 9"):
        decode_indices(b"\x09" + payload[1:], (4, 4), 4, Coder.SIGNED_NEIGHBOUR_CONTEXTS)


@pytest.mark.parametrize(
    ("payload", "shape", "levels", "coder", "message"),
    [
        ("text", (1,), 4, Coder.BIN_CONTEXTS, "payload must be bytes"),
        (b"\x00" * 4, (-1,), 4, Coder.BIN_CONTEXTS, "non-negative integers"),
        (b"\x00" * 4, (1.5,), 4, Coder.BIN_CONTEXTS, "non-negative integers"),
        (b"\x00" * 4, 7, 4, Coder.BIN_CONTEXTS, "sequence of non-negative integers"),
        (b"\x00" * 4, (1,), 300, Coder.BIN_CONTEXTS, "levels must be"),
        (b"\x00" * 4, (1,), 4, 0, "unknown entropy coder"),
    ],
)
def test_bad_decoder_arguments_are_refused(payload, shape, levels, coder, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_indices(payload, shape, levels, coder)


def test_decoding_work_is_capped_by_max_bins() -> None:
    q = np.full((64, 64), 255, np.uint8)  # 255 bins per element, each nearly free once adapted
    payload = encode_indices(q, 256, Coder.BIN_CONTEXTS)
    assert len(payload) < 4000  # about a million bins in a few kB
    np.testing.assert_array_equal(decode_indices(payload, q.shape, 256, Coder.BIN_CONTEXTS), q)
    with pytest.raises(CodecError, match="more than 100000 bins"):
        decode_indices(payload, q.shape, 256, Coder.BIN_CONTEXTS, limits=CodecLimits(max_bins=100_000))
    signed = encode_indices(np.where(np.arange(4096).reshape(64, 64) % 3, 0, 255).astype(np.uint8), 256,
                            Coder.SIGNED_NEIGHBOUR_CONTEXTS)
    with pytest.raises(CodecError, match="more than 1000 bins"):
        decode_indices(signed, (64, 64), 256, Coder.SIGNED_NEIGHBOUR_CONTEXTS, limits=CodecLimits(max_bins=1000))
    with pytest.raises(CodecError, match="max_bins must be a positive integer"):
        CodecLimits(max_bins=0)


def test_a_forged_empty_shape_with_huge_dimensions_is_refused() -> None:
    """Issue #13: [2**32 - 1, 2**32 - 1, 0] has no elements, but numpy raised ValueError when reshaping."""
    quantizer = Quantizer.uniform(-1.0, 1.0, 8)
    payload = b"\x00" * 4
    forged = CompressedTensor("forged", (2**32 - 1, 2**32 - 1, 0), quantizer, Coder.BIN_CONTEXTS, CODER_VERSION,
                              payload, zlib.crc32(payload))
    with pytest.raises(CodecError, match="spans"):
        decode(forged)
    with pytest.raises(CodecError, match="spans"):
        decode_indices(payload, (0, 2**31, 2**31), 8, Coder.BIN_CONTEXTS)
    assert decode_indices(encode_indices(np.zeros((3, 0, 5), np.uint8), 8, Coder.BIN_CONTEXTS), (3, 0, 5), 8,
                          Coder.BIN_CONTEXTS).shape == (3, 0, 5)


def test_a_forged_long_shape_is_refused_by_its_length() -> None:
    with pytest.raises(CodecError, match="1000000 dimensions"):
        decode_indices(b"\x00" * 4, [1] * 1_000_000, 8, Coder.BIN_CONTEXTS)


@pytest.mark.parametrize("coder", [Coder.BIN_CONTEXTS, Coder.SIGNED_NEIGHBOUR_CONTEXTS])
def test_a_payload_that_runs_out_is_refused_before_the_work_cap(coder: Coder) -> None:
    """Issue #13: 0xFF bytes read as a tensor whose every element sits at the top level, ~2500 nearly free bins
    per byte; the decoder used to go on (reading zeros past the end) until max_bins. It now stops once it has
    read past the payload's end: here after ~10**7 bins, not at the cap of 2**29."""
    payload = b"\xff" * 4000
    with pytest.raises(CodecError, match="ended .* early"):
        decode_indices(payload, (1, 2048, 2048), 256, coder, limits=CodecLimits(max_bins=2**29))


def test_the_default_work_cap_refuses_400_kb_of_0xff_within_2_to_the_27_bins() -> None:
    with pytest.raises(CodecError, match="more than 134217728 bins"):
        decode_indices(b"\xff" * 400_000, (1, 8192, 8192), 256, Coder.BIN_CONTEXTS)
