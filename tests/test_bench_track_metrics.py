"""bench/track_metrics.py (CLEAR-MOT and IDF1, our own: py-motmetrics 1.4.0 fails on numpy 2) gives the figures
worked out by hand below, and bench/tracks.py scores a run against its reference with them."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


tm = _bench("track_metrics")


def box(track_id: int, x: float, y: float = 0.0, size: float = 10.0, class_id: int = 0):
    return tm.Box(track_id, class_id, x, y, x + size, y + size)


def test_identical_tracks_score_perfectly() -> None:
    frames = [[box(1, 0), box(2, 50)], [box(1, 2), box(2, 48)], [box(1, 4)]]
    counts = tm.clear_mot(frames, frames)
    assert tm.mota(counts) == 1.0
    assert sum(c.switches for c in counts) == 0
    assert tm.idf1(tm.identity_tables(frames, frames, block=2)) == 1.0


def test_a_track_split_in_two_is_one_switch_and_half_the_identities() -> None:
    # One object over 4 frames; the hypothesis calls it 10, then 11. CLEAR-MOT: 1 switch of 4 boxes, MOTA 0.75.
    # IDF1: reference track 1 pairs with one of 10 / 11, 2 frames in common: 2 * 2 / (4 + 4) = 0.5.
    reference = [[box(1, 0)] for _ in range(4)]
    hypothesis = [[box(10, 0)], [box(10, 0)], [box(11, 0)], [box(11, 0)]]
    counts = tm.clear_mot(reference, hypothesis)
    assert [c.switches for c in counts] == [0, 0, 1, 0]
    assert tm.mota(counts) == pytest.approx(0.75)
    assert tm.idf1(tm.identity_tables(reference, hypothesis, block=30)) == pytest.approx(0.5)


def test_misses_and_false_positives() -> None:
    # Frame 0: both objects found, plus a box where nothing is (1 FP). Frame 1: object 2 missed (1 miss).
    # MOTA 1 - 2/4 = 0.5. IDF1: pairs (1, 1) 2 frames and (2, 2) 1 frame: 2 * 3 / (4 reference + 4 hypothesis) = 0.75.
    reference = [[box(1, 0), box(2, 50)], [box(1, 0), box(2, 50)]]
    hypothesis = [[box(1, 0), box(2, 50), box(3, 200)], [box(1, 0)]]
    counts = tm.clear_mot(reference, hypothesis)
    assert [(c.misses, c.false_positives, c.switches) for c in counts] == [(0, 1, 0), (1, 0, 0)]
    assert tm.mota(counts) == pytest.approx(0.5)
    assert tm.idf1(tm.identity_tables(reference, hypothesis, block=1)) == pytest.approx(0.75)


def test_a_box_of_another_class_or_below_half_iou_does_not_match() -> None:
    # Same place, other class: a miss and a false positive, MOTA 1 - 2/1 = -1. A box shifted by 5 of 10 overlaps
    # 50 of 150: IoU 1/3 < 0.5, the same.
    for hypothesis in ([[box(1, 0, class_id=1)]], [[box(1, 5)]]):
        counts = tm.clear_mot([[box(1, 0)]], hypothesis)
        assert tm.mota(counts) == pytest.approx(-1.0)
        assert tm.idf1(tm.identity_tables([[box(1, 0)]], hypothesis, block=1)) == 0.0


def test_a_correspondence_is_kept_while_it_still_matches() -> None:
    # Frame 1: track 5 still overlaps the object (IoU 100/120) though track 6 fits it exactly: CLEAR-MOT keeps 5
    # (no switch) and 6 is a false positive. MOTA 1 - 1/2 = 0.5.
    reference = [[box(1, 0)], [box(1, 0)]]
    hypothesis = [[box(5, 0)], [tm.Box(5, 0, 0, 0, 10, 12), box(6, 0)]]
    counts = tm.clear_mot(reference, hypothesis)
    assert [(c.misses, c.false_positives, c.switches) for c in counts] == [(0, 0, 0), (0, 1, 0)]


def test_the_jackknife_over_blocks() -> None:
    # Leave-one-out estimates 1, 2, 3: sqrt(2/3 * 2) = sqrt(4/3).
    assert tm.jackknife_se([1.0, 2.0, 3.0]) == pytest.approx(math.sqrt(4 / 3))
    assert math.isnan(tm.jackknife_se([1.0]))
    # Three blocks of 2 frames, one object per frame; errors only in the last block (2 of 2).
    counts = [tm.FrameCounts(objects=1) for _ in range(4)] + [tm.FrameCounts(objects=1, misses=1)] * 2
    assert tm.mota_leave_one_out(counts, 2) == pytest.approx([0.5, 0.5, 1.0])
    # IDF1 with block 0 (the split track's first half) left out: track 1 pairs with 11 for both frames left: 1.0.
    reference = [[box(1, 0)] for _ in range(4)]
    hypothesis = [[box(10, 0)], [box(10, 0)], [box(11, 0)], [box(11, 0)]]
    assert tm.idf1_leave_one_out(tm.identity_tables(reference, hypothesis, block=2)) == pytest.approx([1.0, 1.0])


def test_the_bench_scores_a_run_against_its_reference() -> None:
    tracks = _bench("tracks")
    reference = tracks.TrackRun("v", "reference", None, [[[1, 0, 0, 0, 10, 10]]] * 4,
                                {"forward": 2}, bytes=0, fps=10.0, size=(100, 100))
    run = tracks.TrackRun("v", "features", 64.0, [[[10, 0, 0, 0, 10, 10]]] * 2 + [[[11, 0, 0, 0, 10, 10]]] * 2,
                          {"forward": 1, "backward": 1}, bytes=400, fps=10.0, size=(100, 100))
    scores = tracks.score(run, reference, block=2)
    assert (scores.mota, scores.idf1, scores.switches, scores.count_error) == (0.75, 0.5, 1, 2)
    assert scores.switches_per_block == [0, 1]
    assert scores.kbps == pytest.approx(8.0)  # 400 bytes over 4 frames at 10 frames/s
    assert (scores.grid_crossings, scores.grid_error) == (0, 0)  # the box stands still: it crosses no grid line


def test_line_crossings_are_counted_from_each_tracks_last_point() -> None:
    from splitinfer.services.cloud.zones import Line

    # A line going down the screen at x = 10: moving +x goes from its right (as seen on screen) to its left:
    # backward. Track 1 crosses, leaves for a frame, and comes back across (counted against its last point);
    # track 2 stays on one side; an untracked box (id 0) is never counted. The point is the box's bottom centre.
    line = Line("l", (10.0, 0.0), (10.0, 100.0))
    frames = [[box(1, 0, size=4), box(2, 0, size=4), box(0, 0, size=4)],  # points at x = 2, 2, 2
              [box(1, 12, size=4), box(2, 3, size=4), box(0, 20, size=4)],  # x = 14, 5, 22
              [],
              [box(1, 0, size=4)]]  # x = 2
    counts = tm.crossings_per_frame(frames, line)
    assert counts == [(0, 0), (0, 1), (0, 0), (1, 0)]
    assert tm.count_error(counts, [(0, 0), (0, 1), (0, 1), (0, 0)]) == 1 + 1  # one forward missed, one backward extra


def test_the_bench_counts_grid_line_crossings_against_the_reference() -> None:
    # In a 100 x 100 picture the grid's vertical lines stand at x = 12.5, 25, ... The reference track's point moves
    # from x = 45 to 65 (crossing x = 50 and 62.5: 2 crossings); the hypothesis loses the box in the second frame.
    tracks = _bench("tracks")
    reference = tracks.TrackRun("v", "reference", None, [[[1, 0, 40, 0, 50, 10]], [[1, 0, 60, 0, 70, 10]]],
                                fps=10.0, size=(100, 100))
    run = tracks.TrackRun("v", "pixels", 64.0, [[[3, 0, 40, 0, 50, 10]], []], fps=10.0, size=(100, 100))
    scores = tracks.score(run, reference, block=1)
    assert (scores.grid_crossings, scores.grid_error) == (2, 2)
    assert scores.grid_error_loo == [2, 0]  # leaving out the frame of the crossings leaves none to miss
