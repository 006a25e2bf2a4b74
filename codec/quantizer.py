"""Scalar quantizers for clipped activations: clip to [clip_min, clip_max], map to one of N levels.

A `Quantizer` is data: N-1 ascending decision thresholds and N ascending reconstruction values.
Index k covers (thresholds[k-1], thresholds[k]] and decodes to reconstruction[k]. The uniform
quantizer spaces N levels evenly over the clip range (its end levels are exactly clip_min and
clip_max, where clipping piles values up); the ECSQ designer (splitinfer.codec.ecsq) produces the
same data with other values.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from splitinfer.codec import _kernels
from splitinfer.codec.errors import CodecError

MIN_LEVELS = 2
MAX_LEVELS = 256


class QuantizerKind(enum.IntEnum):
    """Values equal the wire enum splitinfer.v1.QuantizerKind."""

    UNIFORM = 1
    ECSQ = 2


def _as_kind(kind: object) -> QuantizerKind:
    try:
        if isinstance(kind, str):
            return QuantizerKind[kind.upper()]
        if isinstance(kind, bool):
            raise ValueError(kind)
        return QuantizerKind(kind)  # type: ignore[arg-type]  # anything but a valid value raises, caught below
    except (KeyError, ValueError, TypeError) as exc:
        names = ", ".join(k.name for k in QuantizerKind)
        raise CodecError(f"unknown quantizer kind {kind!r}: use one of {names}.") from exc


@dataclass(frozen=True)
class Quantizer:
    """N-level scalar quantizer over [clip_min, clip_max]; validated on construction."""

    kind: QuantizerKind
    clip_min: float
    clip_max: float
    thresholds: tuple[float, ...]
    reconstruction: tuple[float, ...]
    _thresholds32: np.ndarray = field(init=False, repr=False, compare=False)
    _reconstruction32: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("thresholds", "reconstruction"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise CodecError(f"Quantizer.{name} must be a sequence of numbers, got {value!r}.")
        n = len(self.reconstruction)
        if not MIN_LEVELS <= n <= MAX_LEVELS:
            raise CodecError(f"a quantizer needs {MIN_LEVELS}..{MAX_LEVELS} levels, got {n}.")
        if len(self.thresholds) != n - 1:
            raise CodecError(f"{n} reconstruction values need {n - 1} thresholds, got {len(self.thresholds)}.")
        values = (self.clip_min, self.clip_max, *self.thresholds, *self.reconstruction)
        if not all(isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) for v in values):
            raise CodecError("clip range, thresholds and reconstruction values must all be numbers.")
        if not all(math.isfinite(v) for v in values):
            raise CodecError("clip range, thresholds and reconstruction values must all be finite.")
        # The codec and the wire work in float32: store exactly the values they use.
        with np.errstate(over="ignore"):
            canonical = np.asarray(values, dtype=np.float64).astype(np.float32)
        if not np.all(np.isfinite(canonical)):
            raise CodecError("clip range, thresholds and reconstruction values must fit in float32.")
        clip_min, clip_max = (float(v) for v in canonical[:2])
        object.__setattr__(self, "clip_min", clip_min)
        object.__setattr__(self, "clip_max", clip_max)
        object.__setattr__(self, "thresholds", tuple(float(v) for v in canonical[2 : 2 + n - 1]))
        object.__setattr__(self, "reconstruction", tuple(float(v) for v in canonical[2 + n - 1 :]))
        object.__setattr__(self, "kind", _as_kind(self.kind))
        if not self.clip_min < self.clip_max:
            raise CodecError(f"clip_min {self.clip_min} must be below clip_max {self.clip_max}.")
        rec = np.asarray(self.reconstruction, dtype=np.float32)
        thr = np.asarray(self.thresholds, dtype=np.float32)
        if np.any(np.diff(rec) < 0) or np.any(np.diff(thr) < 0):
            raise CodecError("thresholds and reconstruction values must be ascending.")
        object.__setattr__(self, "_thresholds32", thr)
        object.__setattr__(self, "_reconstruction32", rec)

    @property
    def levels(self) -> int:
        return len(self.reconstruction)

    @property
    def zero_level(self) -> int:
        """The level that 0.0 quantizes to."""
        return int(np.searchsorted(self._thresholds32, np.float32(0.0), side="left"))

    @property
    def signed(self) -> bool:
        """True when 0.0 falls in an inner level, so values spread to both sides of the most common one."""
        return 0 < self.zero_level < self.levels - 1

    @classmethod
    def uniform(cls, clip_min: float, clip_max: float, levels: int) -> Quantizer:
        """N levels evenly spaced from clip_min to clip_max; thresholds halfway between them."""
        if not MIN_LEVELS <= int(levels) <= MAX_LEVELS:
            raise CodecError(f"levels must be in {MIN_LEVELS}..{MAX_LEVELS}, got {levels}.")
        if not (math.isfinite(clip_min) and math.isfinite(clip_max) and clip_min < clip_max):
            raise CodecError(f"the clip range [{clip_min}, {clip_max}] must be finite with clip_min < clip_max.")
        # From the float32 clip range a quantizer keeps, so that uniform(q.clip_min, q.clip_max, q.levels) == q.
        low, high = float(np.float32(clip_min)), float(np.float32(clip_max))
        if not low < high:
            raise CodecError(f"the clip range [{clip_min}, {clip_max}] is empty in float32: widen it.")
        rec = np.linspace(low, high, int(levels), dtype=np.float64).astype(np.float32)
        thr = ((rec[:-1].astype(np.float64) + rec[1:]) / 2).astype(np.float32)
        return cls(QuantizerKind.UNIFORM, float(np.float32(clip_min)), float(np.float32(clip_max)),
                   tuple(float(t) for t in thr), tuple(float(r) for r in rec))

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Clip and map float values to uint8 level indices (same shape).

        NaN is rejected; +Inf and -Inf clip to the top and bottom level like any large value.
        """
        array = np.asarray(values, dtype=np.float32)
        levels = np.empty(array.shape, np.uint8)
        # Like searchsorted(side="left"): a value equal to a threshold goes into the lower level.
        if _kernels._quantize(np.ravel(array), self._thresholds32, levels.reshape(-1)):
            raise CodecError("the tensor contains NaN: fix the model or input; NaN has no level to map to.")
        return levels

    def dequantize(self, indices: np.ndarray) -> np.ndarray:
        """Map level indices back to float32 reconstruction values."""
        idx = np.asarray(indices)
        if idx.size and int(idx.max()) >= self.levels:
            raise CodecError(f"level index {int(idx.max())} is out of range for {self.levels} levels.")
        return self._reconstruction32[idx]


MAX_HYSTERESIS = 1.0


MAX_RDO_LAMBDA = 64.0


def quantize_with_reference(values: np.ndarray, quantizer: Quantizer, reference_levels: np.ndarray,
                            margin: float, *, rdo_lambda: float = 0.0,
                            plane_weights: np.ndarray | Sequence[float] | None = None) -> np.ndarray:
    """Quantize like `quantizer.quantize`, but keep an element's reference level while its value lies within
    `margin` steps beyond that level's cell (temporal hysteresis: near-threshold flicker costs inter bits).

    The error per element stays within (0.5 + margin) of a step of uniform levels; margin 0 is plain quantize.
    `rdo_lambda` > 0 then also keeps the reference level of an element, or of a whole plane (the last two
    dimensions), where the squared error that adds (in steps, times the plane's weight in `plane_weights`) is
    at most `rdo_lambda` times the inter bits it saves (rate-distortion optimized quantization; 0: off).
    """
    if not isinstance(quantizer, Quantizer):
        raise CodecError(f"quantizer must be a splitinfer.codec.Quantizer, got {type(quantizer).__name__}.")
    if isinstance(margin, bool) or not isinstance(margin, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(margin) <= MAX_HYSTERESIS:
        raise CodecError(f"the hysteresis margin must be a number of steps in [0, {MAX_HYSTERESIS}], got {margin!r}.")
    array = np.asarray(values)
    if array.dtype.kind not in "fiub":
        raise CodecError(f"the tensor must hold real numbers, got dtype {array.dtype}.")
    array = np.asarray(array, dtype=np.float32)
    reference = np.asarray(reference_levels)
    if reference.shape != array.shape:
        raise CodecError(f"the reference levels have shape {reference.shape} but the tensor has shape {array.shape}: "
                         "pass the previous frame's levels of the same tensor.")
    if reference.dtype.kind not in "iub":
        raise CodecError(f"reference levels must be integers from Quantizer.quantize, got dtype {reference.dtype}.")
    if reference.size and (int(reference.min()) < 0 or int(reference.max()) >= quantizer.levels):
        raise CodecError(f"reference levels {int(reference.min())}..{int(reference.max())} do not fit a "
                         f"{quantizer.levels}-level quantizer: pass levels made by this quantizer.")
    lam = check_rdo_lambda(rdo_lambda)
    plane_size = array.shape[-1] * array.shape[-2] if array.ndim >= 2 else array.size
    planes = array.size // plane_size if plane_size else 0
    weights = _plane_weights(plane_weights, planes) if lam > 0 else _NO_WEIGHTS
    levels = np.empty(array.shape, np.uint8)
    flat_reference = np.ravel(reference).astype(np.uint8, copy=False)
    if _kernels._quantize_with_reference(np.ravel(array), quantizer._thresholds32, quantizer._reconstruction32,
                                         flat_reference, float(margin), levels.reshape(-1)):
        raise CodecError("the tensor contains NaN: fix the model or input; NaN has no level to map to.")
    if lam > 0:
        _kernels._rdo_refine(np.ravel(array), quantizer._reconstruction32, flat_reference, lam, weights, plane_size,
                             levels.reshape(-1))
    return levels


_NO_WEIGHTS = np.ones(0, np.float64)


def check_rdo_lambda(value: object) -> float:
    """`value` as a float when it is a valid rdo_lambda, else CodecError saying what is valid."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(value) <= MAX_RDO_LAMBDA:
        raise CodecError(f"rdo_lambda must be a number in [0, {MAX_RDO_LAMBDA}] (squared steps of error per bit "
                         f"saved; 0 turns rate-distortion quantization off), got {value!r}.")
    return float(value)


def _plane_weights(weights: np.ndarray | Sequence[float] | None, planes: int) -> np.ndarray:
    """Per-plane distortion weights as float64 (ones when None), checked: finite, non-negative, one per plane."""
    if weights is None:
        return _ones(planes)
    if isinstance(weights, tuple):  # a profile's weights, the same object every frame
        return _tuple_weights(weights, planes)
    return _checked_plane_weights(weights, planes)


@functools.lru_cache(maxsize=64)
def _ones(planes: int) -> np.ndarray:
    ones = np.ones(planes, np.float64)
    ones.flags.writeable = False
    return ones


@functools.lru_cache(maxsize=64)
def _tuple_weights(weights: tuple, planes: int) -> np.ndarray:
    array = _checked_plane_weights(weights, planes)
    array.flags.writeable = False
    return array


def _checked_plane_weights(weights: object, planes: int) -> np.ndarray:
    array = np.asarray(weights)
    if array.dtype.kind not in "fiu" or array.shape != (planes,):
        raise CodecError(f"plane_weights must be {planes} real numbers (one per plane of the tensor), got "
                         f"shape {array.shape} of dtype {array.dtype}.")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise CodecError("plane_weights must be finite and non-negative.")
    return array
