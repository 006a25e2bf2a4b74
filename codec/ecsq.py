"""The modified entropy-constrained scalar quantizer (ECSQ) for clipped activations.

Lloyd-style iterations minimise weighted distortion + lambda x rate on calibration values clipped
to [clip_min, clip_max]. Rate is -log2 p(level): the ideal cost of a truncated-unary code with one
adaptive context per bin (the product of the bins' conditional probabilities is p(level)).
As in Choi, Bajic & Cohen (ICME 2020) the point masses that clipping piles up at clip_min and
clip_max stay reconstruction levels. Beyond the paper, the squared error is weighted by
w(x) = (1 + |x - origin| / scale) ** weight_power, so the rate term cannot pull rare large
activations (the ones detections hang on) into a cheap low level; weight_power=0 is plain MSE.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from splitinfer.codec.clip_range import ValueHistogram
from splitinfer.codec.errors import CodecError
from splitinfer.codec.quantizer import Quantizer, QuantizerKind

_EMPTY_PROBABILITY = 1e-12  # a level no value uses costs ~40 bits, so it stays empty


@dataclass(frozen=True)
class EcsqDesign:
    """One designed quantizer and the figures it was designed on (per element, calibration values)."""

    quantizer: Quantizer
    lam: float
    weight_power: float
    mse: float
    weighted_distortion: float
    entropy_bits: float
    probabilities: tuple[float, ...]
    iterations: int


def _origin(clip_min: float, clip_max: float) -> float:
    return 0.0 if clip_min < 0.0 < clip_max else clip_min


def distortion_weights(
    values: np.ndarray, counts: np.ndarray, clip_min: float, clip_max: float, weight_power: float
) -> np.ndarray:
    """w(x) = (1 + |x - origin| / scale) ** weight_power, normalised to mean 1 over the counted values.

    origin is 0 for ranges that cross zero, else clip_min; scale is the mean |x - origin|.
    """
    distance = np.abs(values - _origin(clip_min, clip_max))
    total = counts.sum()
    scale = float(np.dot(counts, distance) / total) or 1.0
    weights = (1.0 + distance / scale) ** float(weight_power)
    return weights / (np.dot(counts, weights) / total)


def _clipped_histogram(hist: ValueHistogram, clip_min: float, clip_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres inside the range plus the two point masses at clip_min and clip_max."""
    inside = (hist.centres > clip_min) & (hist.centres < clip_max)
    below = hist.counts[hist.centres <= clip_min].sum()
    above = hist.counts[hist.centres >= clip_max].sum()
    values = np.concatenate([[clip_min], hist.centres[inside], [clip_max]])
    counts = np.concatenate([[below], hist.counts[inside], [above]])
    keep = counts > 0
    keep[0] = keep[-1] = True
    return values[keep], counts[keep]


def design_ecsq(
    values: np.ndarray | ValueHistogram,
    levels: int,
    clip_min: float,
    clip_max: float,
    *,
    lam: float,
    weight_power: float = 0.0,
    max_iterations: int = 200,
    tolerance: float = 1e-7,
) -> EcsqDesign:
    """Design an N-level ECSQ on calibration values for rate weight `lam`.

    `lam` is relative: 1.0 trades one bit per element against the distortion of the N-level
    uniform quantizer over the same range, so the same lambdas suit every layer. lam=0 gives a
    Lloyd-Max quantizer with fixed end levels.
    """
    uniform = Quantizer.uniform(clip_min, clip_max, levels)  # also checks the level count and the clip range
    if not (math.isfinite(lam) and lam >= 0):
        raise CodecError(f"lambda must be a finite number >= 0, got {lam}.")
    if not (math.isfinite(weight_power) and weight_power >= 0):
        raise CodecError(f"weight_power must be a finite number >= 0, got {weight_power}.")
    hist = values if isinstance(values, ValueHistogram) else ValueHistogram.of(values)
    levels = int(levels)
    x, n = _clipped_histogram(hist, float(clip_min), float(clip_max))
    w = distortion_weights(x, n, clip_min, clip_max, weight_power)
    total = n.sum()
    rec = np.asarray(uniform.reconstruction, dtype=np.float64)
    rec[0], rec[-1] = clip_min, clip_max
    uniform_distortion = float(np.dot(n * w, (x - rec[_assign_nearest(x, rec)]) ** 2) / total)
    lam_abs = float(lam) * max(uniform_distortion, np.finfo(float).tiny)

    index = _assign_nearest(x, rec)
    cost = math.inf
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        mass = np.bincount(index, weights=n, minlength=levels) / total
        rates = -np.log2(np.maximum(mass, _EMPTY_PROBABILITY))
        index = _assign(x, w, rec, lam_abs * rates)
        weighted = np.bincount(index, weights=n * w, minlength=levels)
        moments = np.bincount(index, weights=n * w * x, minlength=levels)
        occupied = weighted > 0
        rec[occupied] = moments[occupied] / weighted[occupied]
        rec[0], rec[-1] = clip_min, clip_max
        rec = np.maximum.accumulate(rec)
        mass = np.bincount(index, weights=n, minlength=levels) / total
        distortion = float(np.dot(n * w, (x - rec[index]) ** 2) / total)
        new_cost = distortion + lam_abs * _entropy(mass)
        if cost - new_cost <= tolerance * max(new_cost, 1e-30):
            cost = new_cost
            break
        cost = new_cost

    quantizer = _to_quantizer(x, index, rec, levels, clip_min, clip_max)
    mass = np.bincount(index, weights=n, minlength=levels) / total
    return EcsqDesign(
        quantizer=quantizer,
        lam=float(lam),
        weight_power=float(weight_power),
        mse=hist.mse(quantizer),
        weighted_distortion=float(np.dot(n * w, (x - rec[index]) ** 2) / total),
        entropy_bits=_entropy(mass),
        probabilities=tuple(float(p) for p in mass),
        iterations=iteration,
    )


def ecsq_sweep(
    values: np.ndarray | ValueHistogram,
    levels: int,
    clip_min: float,
    clip_max: float,
    lambdas: Iterable[float],
    *,
    weight_power: float = 0.0,
) -> list[EcsqDesign]:
    """Design one ECSQ per lambda: the points of the rate-distortion curve."""
    hist = values if isinstance(values, ValueHistogram) else ValueHistogram.of(values)
    return [design_ecsq(hist, levels, clip_min, clip_max, lam=lam, weight_power=weight_power) for lam in lambdas]


def _entropy(mass: np.ndarray) -> float:
    p = mass[mass > 0]
    return float(-np.dot(p, np.log2(p)))


def _assign_nearest(x: np.ndarray, rec: np.ndarray) -> np.ndarray:
    return np.abs(x[:, None] - rec[None, :]).argmin(axis=1)


def _assign(x: np.ndarray, w: np.ndarray, rec: np.ndarray, penalties: np.ndarray) -> np.ndarray:
    """Each value to the level of least w(x)(x - r)^2 + penalty, made contiguous and ascending.

    The end values (the clipping point masses) always keep the end levels.
    """
    costs = w[:, None] * (x[:, None] - rec[None, :]) ** 2 + penalties[None, :]
    index = costs.argmin(axis=1)
    index[0], index[-1] = 0, len(rec) - 1
    return np.maximum.accumulate(index)


def _to_quantizer(
    x: np.ndarray, index: np.ndarray, rec: np.ndarray, levels: int, clip_min: float, clip_max: float
) -> Quantizer:
    """Thresholds halfway between the last value of each cell and the first value above it."""
    thresholds = np.empty(levels - 1)
    for k in range(levels - 1):
        last = np.searchsorted(index, k, side="right") - 1  # last position with index <= k
        thresholds[k] = (x[last] + x[last + 1]) / 2
    # In float32 (what the codec uses) the top threshold must stay below clip_max, or the point mass
    # at clip_max would fall into the level below it.
    below_max = np.nextafter(np.float32(clip_max), np.float32(-np.inf))
    thresholds = np.minimum(thresholds.astype(np.float32), below_max)
    return Quantizer(
        QuantizerKind.ECSQ,
        float(np.float32(clip_min)),
        float(np.float32(clip_max)),
        tuple(float(t) for t in thresholds),
        tuple(float(r) for r in rec),
    )
