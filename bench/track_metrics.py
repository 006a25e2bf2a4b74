"""CLEAR-MOT (MOTA, ID switches) and IDF1 of hypothesis tracks against reference tracks, with block-jackknife SEs.

Written here because py-motmetrics 1.4.0 (its latest release) calls np.asfarray, which numpy 2 removed. The
definitions are the standard ones (Bernardin & Stiefelhagen 2008; Ristani et al. 2016), matching boxes of the same
class at IoU >= 0.5:
- per frame, a reference object keeps its previous hypothesis if they still match; the rest are paired by the
  Hungarian method on 1 - IoU. An object matched to another hypothesis than the one it last had is an ID switch.
  MOTA = 1 - (misses + false positives + ID switches) / reference boxes;
- IDF1: one-to-one pairing of whole reference tracks with whole hypothesis tracks maximising the frames where
  they match (IDTP); IDF1 = 2 IDTP / (reference boxes + hypothesis boxes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Box:
    """One tracked detection in one frame: its track id (0: untracked, counted as a box with no identity)."""

    track_id: int
    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float


Frame = Sequence[Box]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; 0 for boxes of different classes (they never match)."""
    if a.class_id != b.class_id:
        return 0.0
    width = min(a.x2, b.x2) - max(a.x1, b.x1)
    height = min(a.y2, b.y2) - max(a.y1, b.y1)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class FrameCounts:
    """CLEAR-MOT counts of one frame."""

    objects: int = 0
    misses: int = 0
    false_positives: int = 0
    switches: int = 0

    @property
    def errors(self) -> int:
        return self.misses + self.false_positives + self.switches


def _key(box: Box, index: int) -> tuple[int, int]:
    """A track's identity; untracked boxes (id 0) are each their own one-frame track."""
    return (box.track_id, -1) if box.track_id else (0, index)


def clear_mot(reference: Sequence[Frame], hypothesis: Sequence[Frame], threshold: float = IOU_THRESHOLD
              ) -> list[FrameCounts]:
    """Per-frame CLEAR-MOT counts of `hypothesis` against `reference` (the same number of frames)."""
    if len(reference) != len(hypothesis):
        raise ValueError(f"{len(reference)} reference frames but {len(hypothesis)} hypothesis frames")
    last: dict[tuple[int, int], tuple[int, int]] = {}  # reference track -> the hypothesis track it last matched
    out = []
    for n, (refs, hyps) in enumerate(zip(reference, hypothesis)):
        counts = FrameCounts(objects=len(refs))
        ref_keys = [_key(b, (n << 16) + i) for i, b in enumerate(refs)]
        hyp_keys = [_key(b, -((n << 16) + i) - 1) for i, b in enumerate(hyps)]
        overlap = np.array([[iou(r, h) for h in hyps] for r in refs], dtype=float).reshape(len(refs), len(hyps))
        pairs: dict[int, int] = {}
        for i, key in enumerate(ref_keys):  # keep last frame's correspondences that still hold
            if key in last and last[key] in hyp_keys:
                j = hyp_keys.index(last[key])
                if overlap[i, j] >= threshold and j not in pairs.values():
                    pairs[i] = j
        free_r = [i for i in range(len(refs)) if i not in pairs]
        free_h = [j for j in range(len(hyps)) if j not in pairs.values()]
        if free_r and free_h:
            sub = overlap[np.ix_(free_r, free_h)]
            rows, cols = linear_sum_assignment(np.where(sub >= threshold, 1 - sub, 2.0))
            for r, c in zip(rows, cols):
                if sub[r, c] >= threshold:
                    i, j = free_r[r], free_h[c]
                    if ref_keys[i] in last and last[ref_keys[i]] != hyp_keys[j]:
                        counts.switches += 1
                    pairs[i] = j
        for i, j in pairs.items():
            last[ref_keys[i]] = hyp_keys[j]
        counts.misses = len(refs) - len(pairs)
        counts.false_positives = len(hyps) - len(pairs)
        out.append(counts)
    return out


def mota(counts: Sequence[FrameCounts]) -> float:
    """1 - errors / reference boxes (NaN with no reference box)."""
    objects = sum(c.objects for c in counts)
    return 1 - sum(c.errors for c in counts) / objects if objects else math.nan


@dataclass
class IdentityTable:
    """What IDF1 needs, per block of frames: each pair of tracks' matched frames, and the boxes on each side."""

    matched: dict[tuple[tuple[int, int], tuple[int, int]], int] = field(default_factory=dict)
    reference_boxes: int = 0
    hypothesis_boxes: int = 0


def identity_tables(reference: Sequence[Frame], hypothesis: Sequence[Frame], block: int,
                    threshold: float = IOU_THRESHOLD) -> list[IdentityTable]:
    """One IdentityTable per `block` consecutive frames."""
    tables = []
    for start in range(0, len(reference), block):
        table = IdentityTable()
        for n in range(start, min(start + block, len(reference))):
            refs, hyps = reference[n], hypothesis[n]
            table.reference_boxes += len(refs)
            table.hypothesis_boxes += len(hyps)
            for i, r in enumerate(refs):
                for j, h in enumerate(hyps):
                    if iou(r, h) >= threshold:
                        key = (_key(r, (n << 16) + i), _key(h, -((n << 16) + j) - 1))
                        table.matched[key] = table.matched.get(key, 0) + 1
        tables.append(table)
    return tables


def idf1(tables: Sequence[IdentityTable]) -> float:
    """IDF1 over the frames of these tables (NaN with no box on either side)."""
    matched: dict[tuple[tuple[int, int], tuple[int, int]], int] = {}
    for table in tables:
        for key, value in table.matched.items():
            matched[key] = matched.get(key, 0) + value
    boxes = sum(t.reference_boxes + t.hypothesis_boxes for t in tables)
    if not boxes:
        return math.nan
    if not matched:
        return 0.0
    refs = sorted({r for r, _ in matched})
    hyps = sorted({h for _, h in matched})
    rows, cols = {k: i for i, k in enumerate(refs)}, {k: j for j, k in enumerate(hyps)}
    gain = np.zeros((len(refs), len(hyps)))
    for (r, h), value in matched.items():
        gain[rows[r], cols[h]] = value
    picked_r, picked_h = linear_sum_assignment(gain, maximize=True)
    return 2 * float(gain[picked_r, picked_h].sum()) / boxes


def jackknife_se(leave_one_out: Sequence[float]) -> float:
    """The jackknife standard error from the estimates with each block left out (NaN with fewer than two)."""
    values = np.asarray(leave_one_out, dtype=float)
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return math.nan
    return float(math.sqrt((len(values) - 1) / len(values) * ((values - values.mean()) ** 2).sum()))


def blocks(values: Sequence, block: int) -> list[list]:
    """`values` in consecutive blocks of `block`."""
    return [list(values[i:i + block]) for i in range(0, len(values), block)]


def mota_leave_one_out(counts: Sequence[FrameCounts], block: int) -> list[float]:
    """MOTA with each block of frames left out (counts as made on the whole sequence)."""
    parts = blocks(counts, block)
    return [mota([c for k, part in enumerate(parts) if k != left for c in part]) for left in range(len(parts))]


def idf1_leave_one_out(tables: Sequence[IdentityTable]) -> list[float]:
    """IDF1 with each block left out, the track pairing made afresh each time."""
    return [idf1([t for k, t in enumerate(tables) if k != left]) for left in range(len(tables))]


def crossings_per_frame(frames: Sequence[Frame], line) -> list[tuple[int, int]]:
    """Per frame: (forward, backward) crossings of `line` (a services.cloud.zones.Line) by the tracks' bottom-centre
    points, each track's point in this frame against its point when last seen, as the cloud's Tracker counts them."""
    last: dict[int, tuple[float, float]] = {}
    out = []
    for boxes in frames:
        forward = backward = 0
        for b in boxes:
            point = ((b.x1 + b.x2) / 2, b.y2)
            before = last.get(b.track_id)
            if b.track_id and before is not None:
                direction = line.crossing(before, point)
                forward += direction == "forward"
                backward += direction == "backward"
            if b.track_id:
                last[b.track_id] = point
        out.append((forward, backward))
    return out


def count_error(reference: Sequence[tuple[int, int]], hypothesis: Sequence[tuple[int, int]]) -> int:
    """Sum over both directions of |hypothesis crossings - reference crossings| (per-frame counts summed first)."""
    return sum(abs(sum(h[k] for h in hypothesis) - sum(r[k] for r in reference)) for k in (0, 1))
