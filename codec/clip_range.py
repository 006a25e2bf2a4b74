"""Choosing the clip range [clip_min, clip_max] of a tensor from calibration activations.

Three rules: a percentile range, the range that minimises the mean squared error of an N-level
uniform quantizer (clipping error + quantization error, measured on a fine histogram of the
calibration values), and a search that scores candidate ranges with any caller-supplied loss
(the calibration command passes one that runs the tail of the network, i.e. accuracy-driven).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from splitinfer.codec.errors import CodecError
from splitinfer.codec.quantizer import Quantizer

HISTOGRAM_BINS = 8192


@dataclass(frozen=True)
class ValueHistogram:
    """A fine histogram of calibration values: bin centres and counts over [low, high].

    Squared errors measured on bin centres are exact up to (bin width)^2 / 12 per value.
    """

    centres: np.ndarray
    counts: np.ndarray
    low: float
    high: float
    total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", int(self.counts.sum()))

    @classmethod
    def of(cls, values: np.ndarray, bins: int = HISTOGRAM_BINS) -> ValueHistogram:
        """Histogram of every finite value in `values`; NaN or an empty array is refused."""
        array = np.asarray(values, dtype=np.float64).ravel()
        if array.size == 0:
            raise CodecError("no calibration values: pass at least one activation tensor.")
        if not np.isfinite(array).all():
            raise CodecError("calibration values contain NaN or infinity: fix the model or input first.")
        low, high = float(array.min()), float(array.max())
        if low == high:
            high = low + max(abs(low), 1.0) * 1e-6
        counts, edges = np.histogram(array, bins=bins, range=(low, high))
        centres = (edges[:-1] + edges[1:]) / 2
        return cls(centres, counts.astype(np.float64), low, high)

    def quantile(self, q: float | np.ndarray) -> np.ndarray:
        """Approximate quantiles (0..1) from the cumulative counts."""
        cumulative = np.cumsum(self.counts) / self.total
        return np.interp(np.asarray(q, dtype=np.float64), cumulative, self.centres)

    def mse(self, quantizer: Quantizer) -> float:
        """Mean squared error of clip + quantize + dequantize over the histogram."""
        return float(np.dot(self.counts, self._squared_errors(quantizer)) / self.total)

    def _squared_errors(self, quantizer: Quantizer) -> np.ndarray:
        thresholds = np.asarray(quantizer.thresholds, dtype=np.float64)
        reconstruction = np.asarray(quantizer.reconstruction, dtype=np.float64)
        return (self.centres - reconstruction[np.searchsorted(thresholds, self.centres, side="left")]) ** 2


@dataclass(frozen=True)
class ClipRange:
    """A chosen clip range, the rule that chose it and the figure it was chosen on."""

    clip_min: float
    clip_max: float
    method: str
    score: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_min) and math.isfinite(self.clip_max) and self.clip_min < self.clip_max):
            raise CodecError(f"clip range [{self.clip_min}, {self.clip_max}] must be finite with clip_min < clip_max.")


def _histogram(values: np.ndarray | ValueHistogram) -> ValueHistogram:
    return values if isinstance(values, ValueHistogram) else ValueHistogram.of(values)


def percentile_range(values: np.ndarray | ValueHistogram, low: float = 0.01, high: float = 99.99) -> ClipRange:
    """Clip at the `low` and `high` percentiles (0..100) of the calibration values."""
    if not 0.0 <= low < high <= 100.0:
        raise CodecError(f"percentiles must satisfy 0 <= low < high <= 100, got low={low}, high={high}.")
    hist = _histogram(values)
    clip_min, clip_max = (float(v) for v in hist.quantile(np.array([low, high]) / 100.0))
    if clip_min >= clip_max:
        raise CodecError(f"the {low}th and {high}th percentiles coincide ({clip_min}): the tensor is constant.")
    return ClipRange(clip_min, clip_max, f"percentile {low}-{high}")


def _candidate_ends(hist: ValueHistogram, count: int) -> tuple[np.ndarray, np.ndarray]:
    # Tail probabilities from 1e-7 to 0.4, log-spaced: clip ranges are decided in the far tails.
    tails = np.logspace(-7, math.log10(0.4), count)
    lows = np.unique(np.concatenate([[hist.low], hist.quantile(tails)]))
    highs = np.unique(np.concatenate([[hist.high], hist.quantile(1 - tails)]))
    if hist.low < 0 < hist.high:
        lows = np.unique(np.concatenate([lows[lows <= 0], [0.0]]))
    return lows, highs


def mse_optimal_range(
    values: np.ndarray | ValueHistogram,
    levels: int,
    *,
    symmetric: bool = False,
    candidates: int = 48,
) -> ClipRange:
    """The clip range whose `levels`-level uniform quantizer has the least MSE on the values.

    `symmetric=True` searches [-c, c] only, so an odd level count has an exact zero level.
    """
    hist = _histogram(values)
    lows, highs = _candidate_ends(hist, candidates)
    if symmetric:
        extent = np.unique(np.abs(np.concatenate([lows, highs])))
        pairs: Iterable[tuple[float, float]] = ((-c, c) for c in extent if c > 0)
    else:
        pairs = ((lo, hi) for lo in lows for hi in highs if lo < hi)
    best: ClipRange | None = None
    for clip_min, clip_max in pairs:
        error = _uniform_mse(hist, float(clip_min), float(clip_max), levels)
        if best is None or best.score is None or error < best.score:
            best = ClipRange(float(clip_min), float(clip_max), f"mse-optimal N={levels}", error)
    if best is None:
        raise CodecError("no candidate clip range: the calibration values are constant.")
    return best


def _uniform_mse(hist: ValueHistogram, clip_min: float, clip_max: float, levels: int) -> float:
    # Closed form of Quantizer.uniform on the histogram, without building the object.
    step = (clip_max - clip_min) / (levels - 1)
    index = np.clip(np.rint((hist.centres - clip_min) / step), 0, levels - 1)
    return float(np.dot(hist.counts, (hist.centres - (clip_min + index * step)) ** 2) / hist.total)


def search_range(
    loss: Callable[[float, float], float],
    candidates: Sequence[tuple[float, float]],
    method: str = "search",
) -> ClipRange:
    """The candidate (clip_min, clip_max) with the least `loss`; ties go to the earlier candidate.

    `loss` may be anything measured with the range, e.g. the tail's output error on calibration images.
    """
    best: ClipRange | None = None
    for clip_min, clip_max in candidates:
        value = float(loss(float(clip_min), float(clip_max)))
        if math.isnan(value):
            raise CodecError(f"the loss of clip range [{clip_min}, {clip_max}] is NaN: check the loss function.")
        if best is None or best.score is None or value < best.score:
            best = ClipRange(float(clip_min), float(clip_max), method, value)
    if best is None:
        raise CodecError("search_range needs at least one candidate clip range.")
    return best


def scaled_candidates(base: ClipRange, scales: Iterable[float]) -> list[tuple[float, float]]:
    """Candidate ranges that stretch `base` about zero by each scale (a range that crosses zero keeps its sign)."""
    return [(base.clip_min * s, base.clip_max * s) for s in scales if s > 0]
