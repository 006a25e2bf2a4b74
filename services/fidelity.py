"""Fidelity of a pipeline's detections against the unsplit model's: detections lost and added.

A candidate box matches a reference box of the same class when their IoU is at least `iou`; matching
is greedy by candidate score, one-to-one. Lost = reference boxes left unmatched, added = candidate
boxes left unmatched. Accepts anything with x1, y1, x2, y2, class_id, score attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fidelity:
    reference: int
    matched: int
    lost: int
    added: int

    @property
    def changed(self) -> int:
        """Detections lost + added: the figure the benchmarks compare."""
        return self.lost + self.added

    def __add__(self, other: Fidelity) -> Fidelity:
        return Fidelity(self.reference + other.reference, self.matched + other.matched, self.lost + other.lost,
                        self.added + other.added)


def iou(a: Any, b: Any) -> float:
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def compare(reference: Sequence[Any], candidate: Sequence[Any], *, min_iou: float = 0.5) -> Fidelity:
    """Match one frame's candidate detections to the reference detections."""
    unmatched = list(reference)
    matched = 0
    for box in sorted(candidate, key=lambda d: -d.score):
        best, best_iou = None, min_iou
        for ref in unmatched:
            if ref.class_id == box.class_id:
                overlap = iou(ref, box)
                if overlap >= best_iou:
                    best, best_iou = ref, overlap
        if best is not None:
            unmatched.remove(best)
            matched += 1
    return Fidelity(len(reference), matched, len(unmatched), len(candidate) - matched)
