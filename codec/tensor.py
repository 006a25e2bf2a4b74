"""Whole-tensor coding: float array -> clip + quantize -> entropy-coded `CompressedTensor`, and back.

Non-finite input follows the quantizer's rule: NaN is rejected with a CodecError, +Inf and -Inf
clip to the top and bottom level like any out-of-range value.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from splitinfer.codec.entropy import (
    CODER_VERSION,
    DEFAULT_LIMITS,
    INTER_VERSION,
    CodecLimits,
    Coder,
    as_coder,
    check_shape,
    check_version,
    decode_indices,
    encode_quantized,
)
from splitinfer.codec.errors import CodecError
from splitinfer.codec.quantizer import Quantizer, quantize_with_reference


@dataclass(frozen=True)
class CompressedTensor:
    """One coded tensor: decodable with no other state (but the reference frame, for temporal coding)."""

    name: str
    shape: tuple[int, ...]
    quantizer: Quantizer
    coder: Coder
    coder_version: int
    payload: bytes
    payload_crc32: int

    @property
    def nbytes(self) -> int:
        return len(self.payload)

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def bits_per_element(self) -> float:
        return 8.0 * self.nbytes / self.elements if self.elements else 0.0

    def validate(self, limits: CodecLimits | None = None) -> None:
        """Check every field and the payload's CRC-32; CodecError naming the first that is wrong."""
        if not isinstance(self.name, str):
            raise CodecError(f"CompressedTensor.name must be a string, got {type(self.name).__name__}.")
        check_shape(self.shape, limits)
        if not isinstance(self.quantizer, Quantizer):
            raise CodecError(f"CompressedTensor.quantizer must be a Quantizer, got {type(self.quantizer).__name__}.")
        check_version(as_coder(self.coder), self.coder_version)
        if not isinstance(self.payload, (bytes, bytearray)):
            raise CodecError(f"CompressedTensor.payload must be bytes, got {type(self.payload).__name__}.")
        if zlib.crc32(self.payload) != self.payload_crc32:
            raise CodecError(f"the payload of tensor {self.name!r} fails its CRC-32 check "
                             f"({len(self.payload)} bytes): it was corrupted or truncated in transit.")


def default_coder(quantizer: Quantizer) -> Coder:
    """The coder that measured smallest on real tensors of this kind (docs/BENCHMARKS.md, codec section).

    Signed tensors (0.0 quantizes to an inner level) use the signed binarization; the others the
    truncated-unary binarization with neighbour contexts.
    """
    return Coder.SIGNED_NEIGHBOUR_CONTEXTS if quantizer.signed else Coder.NEIGHBOUR_CONTEXTS


def quantize_checked(array: np.ndarray, quantizer: Quantizer, limits: CodecLimits | None = None) -> np.ndarray:
    """Clip and quantize after checking type and size; uint8 levels of the same shape."""
    if not isinstance(quantizer, Quantizer):
        raise CodecError(f"quantizer must be a splitinfer.codec.Quantizer, got {type(quantizer).__name__}.")
    values = np.asarray(array)
    if values.dtype.kind not in "fiub":
        raise CodecError(f"the tensor must hold real numbers, got dtype {values.dtype}.")
    check_shape(values.shape, limits)
    return quantizer.quantize(values)


def encode(array: np.ndarray, quantizer: Quantizer, *, coder: Coder | None = None, name: str = "",
           reference: np.ndarray | None = None, limits: CodecLimits | None = None) -> CompressedTensor:
    """Clip, quantize and entropy-code a tensor; `reference` is the previous frame's levels (temporal coder)."""
    if not isinstance(name, str):
        raise CodecError(f"name must be a string, got {type(name).__name__}.")
    levels = quantize_checked(array, quantizer, limits)
    return _compressed(levels, quantizer, coder, name, reference)


def encode_levels(levels: np.ndarray, quantizer: Quantizer, *, coder: Coder | None = None, name: str = "",
                  reference: np.ndarray | None = None, limits: CodecLimits | None = None,
                  coder_version: int = CODER_VERSION) -> CompressedTensor:
    """Entropy-code levels already made by `quantizer.quantize` (keep them as the next frame's reference).

    coder_version 2 (INTER_VERSION) selects TEMPORAL_CONTEXTS' skip + change coding (docs/BITSTREAM.md 4.3).
    """
    if not isinstance(name, str):
        raise CodecError(f"name must be a string, got {type(name).__name__}.")
    if not isinstance(quantizer, Quantizer):
        raise CodecError(f"quantizer must be a splitinfer.codec.Quantizer, got {type(quantizer).__name__}.")
    array = np.asarray(levels)
    check_shape(array.shape, limits)
    if array.dtype.kind not in "iub":
        raise CodecError(f"levels must be an integer array from Quantizer.quantize, got dtype {array.dtype}.")
    if array.size and (int(array.min()) < 0 or int(array.max()) >= quantizer.levels):
        raise CodecError(f"levels {int(array.min())}..{int(array.max())} do not fit a {quantizer.levels}-level "
                         "quantizer: pass the output of this quantizer's quantize().")
    return _compressed(array.astype(np.uint8, copy=False), quantizer, coder, name, reference, coder_version)


def _compressed(levels: np.ndarray, quantizer: Quantizer, coder: Coder | None, name: str,
                reference: np.ndarray | None, version: int = CODER_VERSION) -> CompressedTensor:
    chosen = default_coder(quantizer) if coder is None else as_coder(coder)
    payload = encode_quantized(levels, quantizer.levels, chosen, reference, version)
    return CompressedTensor(name=name, shape=tuple(int(d) for d in levels.shape), quantizer=quantizer,
                            coder=chosen, coder_version=version, payload=payload,
                            payload_crc32=zlib.crc32(payload))


def decode_levels(tensor: CompressedTensor, *, reference: np.ndarray | None = None,
                  limits: CodecLimits | None = None) -> np.ndarray:
    """The tensor's uint8 level indices (keep them as the next frame's reference)."""
    if not isinstance(tensor, CompressedTensor):
        raise CodecError(f"expected a CompressedTensor, got {type(tensor).__name__}.")
    limits = limits or DEFAULT_LIMITS
    tensor.validate(limits)
    return decode_indices(bytes(tensor.payload), tuple(tensor.shape), tensor.quantizer.levels, tensor.coder,
                          reference=reference, limits=limits, version=tensor.coder_version)


def decode(tensor: CompressedTensor, *, reference: np.ndarray | None = None,
           limits: CodecLimits | None = None) -> np.ndarray:
    """The tensor's float32 reconstruction: each level index mapped to its reconstruction value."""
    levels = decode_levels(tensor, reference=reference, limits=limits)
    return tensor.quantizer.dequantize(levels)


def warm_up() -> None:
    """Load every compiled kernel once (from numba's cache, or by compiling it), so no real frame pays for it.

    Services call this while their health check still says NOT_SERVING.
    """
    quantizer = Quantizer.uniform(-1.0, 1.0, 5)
    values = np.linspace(-1.5, 1.5, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    reference = quantizer.quantize(values[::-1].copy())
    for coder in Coder:
        ref = reference if coder is Coder.TEMPORAL_CONTEXTS else None
        decode(encode(values, quantizer, coder=coder, reference=ref), reference=ref)
    levels = quantizer.quantize(values)
    decode(encode_levels(levels, quantizer, coder=Coder.TEMPORAL_CONTEXTS, reference=reference,
                         coder_version=INTER_VERSION), reference=reference)
    quantize_with_reference(values, quantizer, reference, 0.1)
