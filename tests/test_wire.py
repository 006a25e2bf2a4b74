"""splitinfer.wire: a CompressedTensor survives the wire exactly; a bad message gets a CodecError naming the field."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.codec import CodecError, CodecLimits, Coder, Quantizer, QuantizerKind, decode, encode
from splitinfer.v1 import tensor_pb2
from splitinfer.wire import tensor_from_proto, tensor_to_proto


def _message() -> tensor_pb2.CompressedTensor:
    x = np.random.default_rng(5).normal(size=(1, 3, 8, 8)).astype(np.float32)
    return tensor_to_proto(encode(x, Quantizer.uniform(-1.5, 2.5, 5), name="layer80"))


@given(levels=st.integers(2, 256), coder=st.sampled_from([Coder.BIN_CONTEXTS, Coder.NEIGHBOUR_CONTEXTS,
                                                          Coder.SIGNED_NEIGHBOUR_CONTEXTS]),
       low=st.floats(-1e3, 0, width=32), span=st.floats(0.5, 1e3, width=32))
@settings(max_examples=40, deadline=None)
def test_tensors_survive_serialisation_exactly(levels: int, coder: Coder, low: float, span: float) -> None:
    x = np.random.default_rng(levels).normal(low + span / 2, span, size=(2, 3, 5)).astype(np.float32)
    quantizer = Quantizer.uniform(low, low + span, levels)
    tensor = encode(x, quantizer, coder=coder, name="t")
    wire = tensor_pb2.CompressedTensor.FromString(tensor_to_proto(tensor).SerializeToString())
    back = tensor_from_proto(wire)
    assert back == tensor
    np.testing.assert_array_equal(decode(back), decode(tensor))


def test_real_message_fields_are_filled() -> None:
    msg = _message()
    assert list(msg.shape) == [1, 3, 8, 8] and msg.quantizer.levels == 5
    assert msg.coder == tensor_pb2.ENTROPY_CODER_SIGNED_NEIGHBOUR_CONTEXTS
    assert msg.quantizer.kind == tensor_pb2.QUANTIZER_KIND_UNIFORM


def _broken(edit) -> tensor_pb2.CompressedTensor:
    msg = _message()
    edit(msg)
    return msg


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.ClearField("quantizer"), "has no quantizer"),
        (lambda m: setattr(m.quantizer, "kind", 0), "quantizer kind 0"),
        (lambda m: setattr(m.quantizer, "kind", 77), "quantizer kind 77"),
        (lambda m: setattr(m.quantizer, "levels", 6), "says 6 levels but carries 5"),
        (lambda m: m.quantizer.thresholds.pop(), "need 4 thresholds"),
        (lambda m: m.quantizer.reconstruction.__setitem__(0, float("nan")), "finite"),
        (lambda m: setattr(m, "clip_max", -9.0), "clip_min"),
        (lambda m: setattr(m, "coder", 0), "unknown entropy coder 0"),
        (lambda m: setattr(m, "coder", 12), "unknown entropy coder 12"),
        (lambda m: setattr(m, "coder_version", 0), "coder version 0 is unknown"),
        (lambda m: setattr(m, "payload_crc32", m.payload_crc32 ^ 1), "CRC-32"),
        (lambda m: setattr(m, "payload", m.payload[:-3]), "CRC-32"),
        (lambda m: m.shape.append(2**30), "above the limit"),
    ],
)
def test_bad_messages_raise_codec_error(edit, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        tensor_from_proto(_broken(edit))


def test_limits_apply_on_the_wire() -> None:
    with pytest.raises(CodecError, match="above the limit of 10"):
        tensor_from_proto(_message(), CodecLimits(max_elements=10))
    with pytest.raises(CodecError, match="expected a splitinfer.v1.CompressedTensor"):
        tensor_from_proto(b"bytes")  # type: ignore[arg-type]


@given(
    shape=st.lists(st.integers(0, 2**31), max_size=5),
    kind=st.integers(0, 4),
    levels=st.integers(0, 300),
    reconstruction=st.lists(st.floats(width=32), max_size=12),
    thresholds=st.lists(st.floats(width=32), max_size=12),
    clip=st.tuples(st.floats(width=32), st.floats(width=32)),
    coder=st.integers(0, 6),
    version=st.integers(0, 3),
    payload=st.binary(max_size=40),
    crc_ok=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_arbitrary_messages_give_a_codec_error_or_a_valid_tensor(shape, kind, levels, reconstruction, thresholds,
                                                                   clip, coder, version, payload, crc_ok) -> None:
    import zlib

    msg = tensor_pb2.CompressedTensor(
        name="fuzz", shape=shape, clip_min=clip[0], clip_max=clip[1],
        quantizer=tensor_pb2.Quantizer(kind=kind, levels=levels, reconstruction=reconstruction, thresholds=thresholds),
        coder=coder, coder_version=version, payload=payload,
        payload_crc32=zlib.crc32(payload) if crc_ok else zlib.crc32(payload) ^ 0x5A5A,
    )
    try:
        tensor = tensor_from_proto(tensor_pb2.CompressedTensor.FromString(msg.SerializeToString()))
        values = decode(tensor, reference=np.zeros(tensor.shape, np.uint8)
                        if tensor.coder is Coder.TEMPORAL_CONTEXTS else None)
    except CodecError as exc:
        assert str(exc)
        return
    assert values.shape == tuple(shape) and values.dtype == np.float32
    assert np.isin(values, np.float32(tensor.quantizer.reconstruction)).all()


def test_long_repeated_fields_are_refused_by_their_length() -> None:
    """Issue #13: a forged message's shape or threshold list is checked for length before it is copied."""
    long_shape = _broken(lambda m: m.shape.extend([1] * 100_000))
    with pytest.raises(CodecError, match="100004 dimensions"):
        tensor_from_proto(long_shape)
    long_thresholds = _broken(lambda m: m.quantizer.thresholds.extend([0.0] * 100_000))
    with pytest.raises(CodecError, match="need 4 thresholds"):
        tensor_from_proto(long_thresholds)
    many_levels = _broken(lambda m: setattr(m.quantizer, "levels", 100_000))
    with pytest.raises(CodecError, match="100000 levels"):
        tensor_from_proto(many_levels)


def test_the_previous_frames_quantizer_is_reused_only_for_the_same_bits() -> None:
    """The decoder reuses the stream's previous Quantizer for identical wire values (built once per stream, not per
    frame); a value that differs in any bit, even -0.0 against 0.0, gets its own, and an invalid one is refused."""
    first = tensor_from_proto(_message())
    assert tensor_from_proto(_message(), known=first.quantizer).quantizer is first.quantizer
    assert tensor_from_proto(_message()).quantizer is not first.quantizer
    zero, negative_zero = _message(), _message()
    for msg, value in ((zero, 0.0), (negative_zero, -0.0)):
        msg.quantizer.thresholds[1] = value  # thresholds of 5 uniform levels over [-1.5, 2.5]: -1, 0, 1, 2
    from_zero = tensor_from_proto(zero).quantizer
    from_negative_zero = tensor_from_proto(negative_zero, known=from_zero).quantizer
    assert from_zero is not from_negative_zero
    assert np.signbit(from_negative_zero.thresholds[1]) and not np.signbit(from_zero.thresholds[1])
    bad = _message()
    bad.quantizer.thresholds[0] = 5.0  # no longer ascending
    with pytest.raises(CodecError, match="ascending"):
        tensor_from_proto(bad, known=first.quantizer)


@given(levels=st.integers(2, 256), low=st.floats(-1e3, 0, width=32), span=st.floats(0.5, 1e3, width=32))
@settings(max_examples=60, deadline=None)
def test_a_compact_uniform_quantizer_decodes_to_the_same_bits(levels: int, low: float, span: float) -> None:
    """Compact: levels and clip range alone; the receiver derives the rest, bit for bit, so both sides keep the same
    reference levels (a quantizer switch maps them through the reconstruction values)."""
    x = np.random.default_rng(levels).normal(low + span / 2, span, size=(2, 3, 5)).astype(np.float32)
    tensor = encode(x, Quantizer.uniform(low, low + span, levels), name="t")
    compact = tensor_to_proto(tensor, compact=True)
    assert not compact.quantizer.reconstruction and not compact.quantizer.thresholds
    assert compact.ByteSize() < tensor_to_proto(tensor).ByteSize()
    back = tensor_from_proto(tensor_pb2.CompressedTensor.FromString(compact.SerializeToString()))
    assert back == tensor
    np.testing.assert_array_equal(decode(back), decode(tensor))


def test_only_a_derivable_uniform_quantizer_goes_compact() -> None:
    """An ECSQ quantizer, or uniform values that are not Quantizer.uniform's to the bit, go in full."""
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    ecsq = Quantizer(QuantizerKind.ECSQ, -1.0, 1.0, (-0.4, 0.5), (-0.9, 0.0, 0.8))
    uniform = Quantizer.uniform(-1.0, 1.0, 3)
    nudged = Quantizer(QuantizerKind.UNIFORM, uniform.clip_min, uniform.clip_max,
                       (uniform.thresholds[0] + 1e-4, uniform.thresholds[1]), uniform.reconstruction)
    for quantizer in (ecsq, nudged):
        message = tensor_to_proto(encode(x, quantizer, name="t"), compact=True)
        assert len(message.quantizer.reconstruction) == 3
        assert tensor_from_proto(message).quantizer == quantizer


def test_an_ecsq_quantizer_without_its_values_is_refused() -> None:
    msg = _message()
    msg.quantizer.kind = tensor_pb2.QUANTIZER_KIND_ECSQ
    msg.quantizer.ClearField("reconstruction")
    msg.quantizer.ClearField("thresholds")
    with pytest.raises(CodecError, match="carries 0 reconstruction values"):
        tensor_from_proto(msg)


def test_a_compact_quantizer_reuses_the_previous_frames_only_when_it_is_the_same() -> None:
    x = np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)
    quantizer = Quantizer.uniform(-1.5, 2.5, 95)
    message = tensor_to_proto(encode(x, quantizer, name="t"), compact=True)
    assert tensor_from_proto(message, known=quantizer).quantizer is quantizer
    other = Quantizer.uniform(-1.5, 2.0, 95)
    back = tensor_from_proto(message, known=other).quantizer
    assert back is not other and back == quantizer
