"""Entropy coding of level-index arrays: the public, validating side of the compiled kernels.

A payload is the range coder's bytes, nothing else, except for SIGNED_NEIGHBOUR_CONTEXTS whose first
byte is the most probable level m (the binarization codes the distance from it). Shape, level count
and coder travel beside the payload (in a CompressedTensor), so the payload has no header.

Neighbours: the last two dimensions of a tensor are the plane (H, W); "left" and "above" are read
inside each plane. A 1-D array is one row; a 0-D array is one element.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from splitinfer.codec import _kernels
from splitinfer.codec.errors import CodecError
from splitinfer.codec.quantizer import MAX_LEVELS, MIN_LEVELS

CODER_VERSION = 1
"""Bitstream version 1: every coder below has it; a decoder refuses versions a coder does not have."""

INTER_VERSION = 2
"""TEMPORAL_CONTEXTS version 2: per-plane skip and the change from the reference (docs/BITSTREAM.md 4.3)."""

# Every element codes at least one bin and a bin costs at least 0.0031 bits, so no valid payload
# decodes to more than ~2561 elements per byte (+ the 4 flush bytes); 2600 leaves a margin. The other
# way, an element codes at most N - 1 bins of at most 8.9 bits: at most 9/8 (N - 1) bytes per element.
_MAX_ELEMENTS_PER_BYTE = 2600
_FLUSH_BYTES = 4
MAX_DIMENSIONS = 32


class Coder(enum.IntEnum):
    """Binarization + context model; values equal the wire enum splitinfer.v1.EntropyCoder."""

    BIN_CONTEXTS = 1
    NEIGHBOUR_CONTEXTS = 2
    SIGNED_NEIGHBOUR_CONTEXTS = 3
    TEMPORAL_CONTEXTS = 4


def parse_coder(text: str | None) -> Coder | None:
    """A coder from any spelling users type (NEIGHBOUR_CONTEXTS, neighbour-contexts); "auto" or "" -> None.

    None means "the measured default for the tensor kind" (see default_coder).
    """
    if (text or "").strip().upper() in ("", "AUTO"):
        return None
    try:
        return as_coder(text)
    except CodecError:
        names = ", ".join(["auto", *(c.name.lower().replace("_", "-") for c in Coder)])
        raise CodecError(f"unknown coder {text!r}: use one of {names} (any case, '-' or '_').") from None


@dataclass(frozen=True)
class CodecLimits:
    """What a decoder accepts: elements are checked before any allocation, bins (work) while decoding.

    A payload of a few MB can legitimately describe billions of bins (0.003 bits each at the most
    skewed probability: 400 kB of 0xFF reads as a 4-million-element tensor of 256 levels, all at the
    top one); max_bins caps the decoding time such a payload can cost (~0.3 s per 10**8 bins). The
    default, 2**27, fits a 2**24-element tensor of 8 levels (7 bins per element at most); raise it
    for larger tensors or more levels.
    """

    max_elements: int = 2**26
    max_bins: int = 2**27

    def __post_init__(self) -> None:
        for name in ("max_elements", "max_bins"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CodecError(f"CodecLimits.{name} must be a positive integer, got {value!r}.")


DEFAULT_LIMITS = CodecLimits()


def coder_versions(coder: Coder) -> tuple[int, ...]:
    """The bitstream versions this decoder reads for `coder`: 1 for all, and 2 for TEMPORAL_CONTEXTS."""
    return (CODER_VERSION, INTER_VERSION) if coder is Coder.TEMPORAL_CONTEXTS else (CODER_VERSION,)


def check_version(coder: Coder, version: object) -> int:
    """The version as an int if `coder` has it; CodecError otherwise."""
    known = coder_versions(coder)
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or int(version) not in known:
        names = " or ".join(str(v) for v in known)
        raise CodecError(f"coder version {version!r} is unknown to this decoder for {coder.name} (it reads version "
                         f"{names}); upgrade splitinfer on the decoding side or re-encode.")
    return int(version)

@functools.cache
def _cost_table() -> np.ndarray:
    """-log2(p / 2**15) for every 15-bit probability p (index 0 unused)."""
    p = np.arange(_kernels.PROB_ONE, dtype=np.float64)
    p[0] = 1.0
    return -np.log2(p / _kernels.PROB_ONE)


def as_coder(coder: object) -> Coder:
    """The Coder for an enum member, its value or its name; CodecError otherwise."""
    if isinstance(coder, Coder):
        return coder
    if isinstance(coder, str):
        try:
            return Coder[coder.strip().upper().replace("-", "_")]
        except KeyError:
            pass
    elif isinstance(coder, (int, np.integer)) and not isinstance(coder, bool):
        try:
            return Coder(int(coder))
        except ValueError:
            pass
    names = ", ".join(c.name for c in Coder)
    raise CodecError(f"unknown entropy coder {coder!r}: use one of {names}.")


def check_levels(levels: object) -> int:
    """The level count as an int in 2..256; CodecError otherwise."""
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not MIN_LEVELS <= levels <= MAX_LEVELS:
        raise CodecError(f"levels must be an integer in {MIN_LEVELS}..{MAX_LEVELS}, got {levels!r}.")
    return int(levels)


def check_shape(shape: object, limits: CodecLimits | None = None) -> tuple[int, ...]:
    """A shape as a tuple of non-negative ints whose product is within the limits."""
    limits = limits or DEFAULT_LIMITS
    length = len(shape) if hasattr(shape, "__len__") else None  # checked before a forged, long list is copied
    if length is not None and length > MAX_DIMENSIONS:
        raise CodecError(f"shape has {length} dimensions; at most {MAX_DIMENSIONS} are supported.")
    try:
        dims: tuple[Any, ...] = tuple(shape)  # type: ignore[arg-type]
    except TypeError as exc:
        raise CodecError(f"shape must be a sequence of non-negative integers, got {shape!r}.") from exc
    if len(dims) > MAX_DIMENSIONS:
        raise CodecError(f"shape has {len(dims)} dimensions; at most {MAX_DIMENSIONS} are supported.")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise CodecError(f"shape must be a sequence of non-negative integers, got {str(shape)[:200]}.")
    dims = tuple(int(d) for d in dims)
    elements = math.prod(dims)
    if elements > limits.max_elements:
        raise CodecError(
            f"shape {dims} has {elements} elements, above the limit of {limits.max_elements}; "
            "raise CodecLimits.max_elements if the tensor is genuine."
        )
    # An empty tensor (a zero dimension) still has its other dimensions checked: numpy cannot even hold a
    # shape like (2**32 - 1, 2**32 - 1, 0), and a decoder would loop over the planes it describes.
    spanned = math.prod(d for d in dims if d)
    if spanned > limits.max_elements:
        raise CodecError(
            f"shape {dims} spans {spanned} elements without its zero dimension(s), above the limit of "
            f"{limits.max_elements}: it is forged or corrupted."
        )
    return dims


def _planes(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(planes, height, width): the last two dimensions form the plane neighbours are read in."""
    if len(shape) == 0:
        return 1, 1, 1
    if len(shape) == 1:
        return 1, 1, shape[0]
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def _as_levels(indices: np.ndarray, levels: int, what: str) -> np.ndarray:
    array = np.asarray(indices)
    if array.dtype.kind not in "iub":
        raise CodecError(f"{what} must be an integer array of level indices, got dtype {array.dtype}.")
    if array.size:
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi >= levels:
            raise CodecError(f"{what} holds level indices {lo}..{hi}; {levels} levels allow 0..{levels - 1}.")
    return np.ascontiguousarray(array, dtype=np.uint8).reshape(-1)


def _tu_model(coder: Coder, ref: np.ndarray) -> tuple[int | None, np.ndarray | None]:
    """The (neighbours, reference) arguments that select a truncated-unary kernel's context model."""
    if coder is Coder.NEIGHBOUR_CONTEXTS:
        return 1, None
    if coder is Coder.TEMPORAL_CONTEXTS:
        return None, ref
    return None, None


def _reference_for(coder: Coder, reference: np.ndarray | None, shape: tuple[int, ...], levels: int) -> np.ndarray:
    if coder is not Coder.TEMPORAL_CONTEXTS:
        if reference is not None:
            raise CodecError(f"a reference frame is only used by TEMPORAL_CONTEXTS, not by {coder.name}; pass none.")
        return np.empty(0, np.uint8)
    if reference is None:
        raise CodecError("TEMPORAL_CONTEXTS needs the previous frame's levels as `reference`; code an intra frame "
                         "(another coder) when there is none.")
    ref = np.asarray(reference)
    if ref.shape != shape:
        raise CodecError(f"the reference has shape {ref.shape} but the tensor has shape {shape}; "
                         "a reference must be the same tensor of the previous frame.")
    return _as_levels(ref, levels, "the reference")


def most_probable_level(indices: np.ndarray, levels: int) -> int:
    """The most frequent level (the lowest on ties): the pivot of the signed binarization."""
    flat = np.ravel(np.asarray(indices, dtype=np.uint8))
    if flat.size == 0:
        return 0
    return int(np.argmax(_kernels._histogram(flat, levels)))


def _bin_bound(flat: np.ndarray, levels: int, coder: Coder, mode: int, planes: int, version: int) -> int:
    """An upper bound on the number of bins the binarization makes of these levels."""
    if version == INTER_VERSION:
        return planes + flat.size * levels
    if coder is Coder.SIGNED_NEIGHBOUR_CONTEXTS:
        return int(np.abs(flat.astype(np.int64) - mode).sum()) + 2 * flat.size
    return int(np.minimum(flat.astype(np.int64) + 1, levels - 1).sum())


def _run_encoder(flat: np.ndarray, shape: tuple[int, ...], levels: int, coder: Coder, ref: np.ndarray,
                 cost_table: np.ndarray | None, version: int = CODER_VERSION) -> tuple[bytes, float]:
    planes, height, width = _planes(shape)
    mode = most_probable_level(flat, levels) if coder is Coder.SIGNED_NEIGHBOUR_CONTEXTS else 0
    if version == INTER_VERSION:
        mode = most_probable_level(ref, levels)
    # First try a buffer of one byte per element (8 bits/element covers every practical tensor); if the
    # kernel reports it might not fit, retry with the proven bound of 2 bytes per bin.
    capacity = flat.size + 64
    for attempt in range(2):
        out = np.empty(capacity, np.uint8)
        if version == INTER_VERSION:
            size, cost = _kernels._encode_inter(flat, ref, planes, height, width, levels, mode, out, cost_table)
        elif coder is Coder.SIGNED_NEIGHBOUR_CONTEXTS:
            size, cost = _kernels._encode_signed(flat, planes, height, width, levels, mode, out, cost_table)
        else:
            size, cost = _kernels._encode_tu(flat, planes, height, width, levels, *_tu_model(coder, ref), out,
                                             cost_table)
        if size >= 0:
            header = bytes([mode]) if coder is Coder.SIGNED_NEIGHBOUR_CONTEXTS else b""
            return header + out[1:size].tobytes(), cost
        capacity = 2 * _bin_bound(flat, levels, coder, mode, planes, version) + 2 * _kernels._ELEMENT_ROOM * levels + 64
    raise AssertionError("the encoder overran its proven output bound")  # unreachable: see _kernels


def _encode(indices: np.ndarray, levels: int, coder: object, reference: np.ndarray | None,
            cost_table: np.ndarray | None, version: object) -> tuple[bytes, float]:
    levels = check_levels(levels)
    coder = as_coder(coder)
    version = check_version(coder, version)
    array = np.asarray(indices)
    flat = _as_levels(array, levels, "indices")
    ref = _reference_for(coder, reference, array.shape, levels)
    return _run_encoder(flat, array.shape, levels, coder, ref, cost_table, version)


def encode_quantized(levels_array: np.ndarray, levels: int, coder: Coder, reference: np.ndarray | None,
                     version: int = CODER_VERSION) -> bytes:
    """encode_indices for the uint8 output of Quantizer.quantize, whose range needs no second check."""
    version = check_version(coder, version)
    ref = _reference_for(coder, reference, levels_array.shape, levels)
    return _run_encoder(np.ravel(levels_array), levels_array.shape, levels, coder, ref, None, version)[0]


def encode_indices(indices: np.ndarray, levels: int, coder: Coder, *, reference: np.ndarray | None = None,
                   version: int = CODER_VERSION) -> bytes:
    """Code an integer array of level indices (0..levels-1) losslessly; returns the payload."""
    return _encode(indices, levels, coder, reference, None, version)[0]


def ideal_cost_bits(indices: np.ndarray, levels: int, coder: Coder, *, reference: np.ndarray | None = None,
                    version: int = CODER_VERSION) -> float:
    """The adaptive model's ideal cost, sum of -log2 p over every coded bin (what a perfect coder would spend)."""
    return _encode(indices, levels, coder, reference, _cost_table(), version)[1]


def decode_indices(payload: bytes, shape: tuple[int, ...], levels: int, coder: Coder, *,
                   reference: np.ndarray | None = None, limits: CodecLimits | None = None,
                   version: int = CODER_VERSION) -> np.ndarray:
    """Decode a payload back to the uint8 level indices of the given shape; CodecError if it is not valid."""
    levels = check_levels(levels)
    coder = as_coder(coder)
    version = check_version(coder, version)
    shape = check_shape(shape, limits)
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CodecError(f"payload must be bytes, got {type(payload).__name__}.")
    data = np.frombuffer(payload, dtype=np.uint8)
    elements = math.prod(shape)
    if version == INTER_VERSION:
        return _decode_inter(data, shape, levels, reference, limits)
    header = 1 if coder is Coder.SIGNED_NEIGHBOUR_CONTEXTS else 0
    if data.size < header + _FLUSH_BYTES:
        raise CodecError(f"the payload has {data.size} bytes; a {coder.name} payload has at least "
                         f"{header + _FLUSH_BYTES}: it is truncated.")
    if elements > (data.size + 8) * _MAX_ELEMENTS_PER_BYTE:
        raise CodecError(f"a {data.size}-byte payload cannot hold {elements} elements (shape {shape}): "
                         "the shape or the payload is wrong.")
    max_bytes = header + _FLUSH_BYTES + 8 + (elements * (levels - 1) * 9 + 7) // 8
    if data.size > max_bytes:
        raise CodecError(f"a {data.size}-byte payload is too long for {elements} elements of {levels} levels: "
                         "the shape or the payload is wrong.")
    ref = _reference_for(coder, reference, shape, levels)
    planes, height, width = _planes(shape)
    max_bins = (limits or DEFAULT_LIMITS).max_bins
    if coder is Coder.SIGNED_NEIGHBOUR_CONTEXTS:
        mode = int(data[0])
        if mode >= levels:
            raise CodecError(f"the payload names most probable level {mode}, but there are only {levels} levels: "
                             "it is corrupted.")
        flat, consumed, in_range, exhausted = _kernels._decode_signed(data[1:], planes, height, width, levels, mode,
                                                                      max_bins)
        consumed += 1
    else:
        flat, consumed, in_range, exhausted = _kernels._decode_tu(data, planes, height, width, levels,
                                                                  *_tu_model(coder, ref), max_bins)
    return _checked_end(flat, shape, levels, data, consumed, in_range, exhausted, max_bins)


def _decode_inter(data: np.ndarray, shape: tuple[int, ...], levels: int, reference: np.ndarray | None,
                  limits: CodecLimits | None) -> np.ndarray:
    """TEMPORAL_CONTEXTS version 2: size bounds on planes (a skipped plane codes one bin), then the kernel."""
    elements = math.prod(shape)
    planes, height, width = _planes(shape)
    coded_planes = planes if elements else 0
    if data.size < _FLUSH_BYTES:
        raise CodecError(f"the payload has {data.size} bytes; a version-2 TEMPORAL_CONTEXTS payload has at least "
                         f"{_FLUSH_BYTES}: it is truncated.")
    if coded_planes > (data.size + 8) * _MAX_ELEMENTS_PER_BYTE:
        raise CodecError(f"a {data.size}-byte payload cannot hold {coded_planes} planes (shape {shape}): "
                         "the shape or the payload is wrong.")
    max_bytes = _FLUSH_BYTES + 8 + ((coded_planes + elements * levels) * 9 + 7) // 8
    if data.size > max_bytes:
        raise CodecError(f"a {data.size}-byte payload is too long for {elements} elements of {levels} levels: "
                         "the shape or the payload is wrong.")
    ref = _reference_for(Coder.TEMPORAL_CONTEXTS, reference, shape, levels)
    mode = most_probable_level(ref, levels)
    max_bins = (limits or DEFAULT_LIMITS).max_bins
    flat, consumed, in_range, exhausted = _kernels._decode_inter(data, ref, planes, height, width, levels, mode,
                                                                 max_bins)
    return _checked_end(flat, shape, levels, data, consumed, in_range, exhausted, max_bins)


def _checked_end(flat: np.ndarray, shape: tuple[int, ...], levels: int, data: np.ndarray, consumed: int,
                 in_range: bool, exhausted: bool, max_bins: int) -> np.ndarray:
    """The decoded levels if the kernel stopped within the work limit on exactly the payload's last byte."""
    elements = math.prod(shape)
    if exhausted:
        raise CodecError(f"the payload decodes to more than {max_bins} bins ({elements} elements of {levels} "
                         "levels): it is forged or corrupted; raise CodecLimits.max_bins if the tensor is genuine.")
    if consumed > data.size:
        raise CodecError(f"the payload ended {consumed - data.size} byte(s) early: it is truncated or corrupted.")
    if consumed < data.size or not in_range:
        raise CodecError(f"the payload does not decode cleanly ({data.size - consumed} byte(s) left over): "
                         "it is corrupted or was coded with another shape, level count or coder.")
    return flat.reshape(shape)
