"""Bjontegaard delta rate: the average rate difference of two rate-quality curves at equal quality.

Each curve is reduced to its Pareto front (the least rate that reaches each quality), log-rate is
interpolated against quality with monotone cubic (PCHIP) pieces, and the two are averaged over the
quality interval both curves cover. -50 % means the test codec needs half the anchor's bytes.
Run as a script for a worked example:  python bench/bd_rate.py
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(rate, quality) points that no other point beats with less or equal rate and higher quality."""
    front: list[tuple[float, float]] = []
    for rate, quality in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or quality > front[-1][1]:
            front.append((float(rate), float(quality)))
    return front


def bd_rate(anchor: Sequence[tuple[float, float]], test: Sequence[tuple[float, float]]) -> float | None:
    """Percent rate change of `test` against `anchor` at equal quality; None where curves do not overlap."""
    curves = []
    for points in (anchor, test):
        front = pareto_front([(r, q) for r, q in points if r > 0])
        if len(front) < 2:
            return None
        rates, qualities = np.array(front).T
        curves.append((qualities, np.log(rates)))
    low = max(c[0].min() for c in curves)
    high = min(c[0].max() for c in curves)
    if not low < high:
        return None
    grid = np.linspace(low, high, 201)
    (qa, la), (qt, lt) = curves
    diff = PchipInterpolator(qt, lt)(grid) - PchipInterpolator(qa, la)(grid)
    return float((np.exp(np.trapezoid(diff, grid) / (high - low)) - 1) * 100)


def main() -> None:
    anchor = [(1000, 0.30), (2000, 0.40), (4000, 0.45), (8000, 0.47)]
    test = [(r / 2, q) for r, q in anchor]
    print(f"half the bytes at every quality: BD-rate {bd_rate(anchor, test):+.1f} %")


if __name__ == "__main__":
    main()
