"""Conversion between the codec's CompressedTensor and the wire message splitinfer.v1.CompressedTensor.

The codec never sees protobuf; services call these two functions at its edge. `tensor_from_proto`
validates everything a peer could have got wrong (enums, level count, shape, limits, version, CRC-32)
and raises CodecError with what was wrong.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from typing import cast

from splitinfer.codec import CodecError, CodecLimits, CompressedTensor, Quantizer, QuantizerKind
from splitinfer.codec.entropy import MAX_DIMENSIONS, as_coder, check_shape
from splitinfer.codec.quantizer import MAX_LEVELS, MIN_LEVELS
from splitinfer.v1 import tensor_pb2

def tensor_to_proto(t: CompressedTensor, *, compact: bool = False) -> tensor_pb2.CompressedTensor:
    """The wire message for a coded tensor.

    `compact`: a uniform quantizer goes as its kind, levels and clip range only, without its reconstruction values
    and thresholds, when the decoder derives them to the same bits (docs/BITSTREAM.md, "Compact uniform
    quantizers"); at 255 levels that saves 2 kB a frame. Only for a peer that says it derives them
    (StreamAccepted.derives_uniform_quantizers)."""
    q = t.quantizer
    explicit = not (compact and is_derivable(q))
    return tensor_pb2.CompressedTensor(
        name=t.name,
        shape=list(t.shape),
        clip_min=q.clip_min,
        clip_max=q.clip_max,
        quantizer=tensor_pb2.Quantizer(
            # The generated stubs accept enum members or names only; protobuf takes the plain int value too.
            kind=cast(tensor_pb2.QuantizerKind, int(q.kind)), levels=q.levels,
            reconstruction=list(q.reconstruction) if explicit else [],
            thresholds=list(q.thresholds) if explicit else [],
        ),
        coder=cast(tensor_pb2.EntropyCoder, int(t.coder)),
        coder_version=t.coder_version,
        payload=bytes(t.payload),
        payload_crc32=t.payload_crc32,
    )


def coded_bytes(tensors: Iterable[tensor_pb2.CompressedTensor]) -> int:
    """The bytes a frame's coded tensors take in its message: each CompressedTensor as serialized, so the payload
    and every codec header (quantizer, clip range, shape, name, CRC). What rate control holds and benchmarks count."""
    return sum(t.ByteSize() for t in tensors)


@functools.lru_cache(maxsize=256)  # a stream codes every frame with one of a ladder's few quantizers
def is_derivable(q: Quantizer) -> bool:
    """True when `q` is exactly, bit for bit, the uniform quantizer of its levels and clip range."""
    if q.kind is not QuantizerKind.UNIFORM:
        return False
    derived = Quantizer.uniform(q.clip_min, q.clip_max, q.levels)
    return _bits(derived.clip_min, derived.clip_max, *derived.thresholds, *derived.reconstruction) == _bits(
        q.clip_min, q.clip_max, *q.thresholds, *q.reconstruction)


def _quantizer(kind: int, clip_min: float, clip_max: float, thresholds: tuple[float, ...],
               reconstruction: tuple[float, ...], known: Quantizer | None) -> Quantizer:
    """The Quantizer of these wire values: `known` when it holds exactly these bits (a stream sends the same
    quantizer with every frame, and building and validating one costs more than decoding a small tensor)."""
    if known is not None and known.kind == kind and _bits(known.clip_min, known.clip_max, *known.thresholds,
                                                          *known.reconstruction) == _bits(clip_min, clip_max,
                                                                                          *thresholds,
                                                                                          *reconstruction):
        return known
    return Quantizer(QuantizerKind(kind), clip_min, clip_max, thresholds, reconstruction)


def _bits(*values: float) -> bytes:
    """The exact bits of float values: -0.0 and 0.0, equal as floats, stay apart."""
    return struct.pack(f"<{len(values)}d", *values)


def tensor_from_proto(msg: tensor_pb2.CompressedTensor, limits: CodecLimits | None = None, *,
                      known: Quantizer | None = None) -> CompressedTensor:
    """The coded tensor a wire message carries, validated; CodecError says which field is wrong.

    `known` is the quantizer this tensor had in the stream's previous frame: reused when the wire carries the
    same one."""
    if not isinstance(msg, tensor_pb2.CompressedTensor):
        raise CodecError(f"expected a splitinfer.v1.CompressedTensor message, got {type(msg).__name__}.")
    label = f"tensor {msg.name[:64]!r}"
    # Lengths first: a forged message can carry millions of dimensions or thresholds, not worth copying.
    if len(msg.shape) > MAX_DIMENSIONS:
        raise CodecError(f"{label} has {len(msg.shape)} dimensions; at most {MAX_DIMENSIONS} are supported.")
    shape = check_shape(tuple(msg.shape), limits)
    if not msg.HasField("quantizer"):
        raise CodecError(f"{label} has no quantizer: the sender must fill CompressedTensor.quantizer.")
    wq = msg.quantizer
    if wq.kind not in tuple(QuantizerKind):
        raise CodecError(f"{label} has quantizer kind {wq.kind}, which this decoder does not know "
                         f"(known: {', '.join(f'{k.value} {k.name}' for k in QuantizerKind)}).")
    if not MIN_LEVELS <= wq.levels <= MAX_LEVELS:
        raise CodecError(f"{label} says {wq.levels} levels; a quantizer has {MIN_LEVELS}..{MAX_LEVELS}.")
    derived = wq.kind == QuantizerKind.UNIFORM and not wq.reconstruction and not wq.thresholds
    if not derived and wq.levels != len(wq.reconstruction):
        raise CodecError(f"{label} says {wq.levels} levels but carries {len(wq.reconstruction)} reconstruction values "
                         "(a uniform quantizer may carry none of them and no thresholds).")
    if not derived and len(wq.thresholds) != wq.levels - 1:
        raise CodecError(f"{label} says {wq.levels} levels, which need {wq.levels - 1} thresholds; it carries "
                         f"{len(wq.thresholds)}.")
    try:
        if derived and known is not None and known.levels == wq.levels and is_derivable(known) \
                and _bits(known.clip_min, known.clip_max) == _bits(msg.clip_min, msg.clip_max):
            quantizer = known  # the previous frame's, as every frame between quantizer switches
        elif derived:  # compact: the uniform quantizer of these levels and clip range
            uniform = Quantizer.uniform(msg.clip_min, msg.clip_max, wq.levels)
            quantizer = _quantizer(wq.kind, uniform.clip_min, uniform.clip_max, uniform.thresholds,
                                   uniform.reconstruction, known)
        else:
            quantizer = _quantizer(wq.kind, msg.clip_min, msg.clip_max, tuple(wq.thresholds),
                                   tuple(wq.reconstruction), known)
    except CodecError as exc:
        raise CodecError(f"{label} has an invalid quantizer: {exc}") from exc
    try:
        coder = as_coder(msg.coder)
    except CodecError as exc:
        raise CodecError(f"{label}: {exc}") from exc
    tensor = CompressedTensor(name=msg.name, shape=shape, quantizer=quantizer, coder=coder,
                              coder_version=msg.coder_version, payload=bytes(msg.payload),
                              payload_crc32=msg.payload_crc32)
    tensor.validate(limits)
    return tensor
