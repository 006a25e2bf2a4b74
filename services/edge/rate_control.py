"""Rate control: hold a bit budget by choosing, per frame, an operating point of a codec ladder.

A leaky bucket (the VBV model of video coders) holds the bytes sent and drains at the budget, in seconds
of source time (frame timestamps), so a file replayed faster than real time gets the same bytes per frame
as a live camera: 64 kbit/s on a 10 fps video is 800 B per frame.

Each frame gets a target size: the budget's bytes per frame, plus the gap between the bucket's level and its
target level (TARGET_FULLNESS of its size) spread over RECOVERY_S seconds, so a debt is paid back, and unused
room spent, within about a second. Sizes are predicted per point from its calibrated rate, scaled by what
frames of the same kind (intra, or inter at the nearest point coded) actually cost here. An inter frame keeps
its point while the point's predicted size stays within SWITCH_TOLERANCE of the target (a switch up costs a
refinement of the whole reference, so points are not chased frame by frame); beyond it the frame jumps down
to the costliest point predicted to fit, or tries one point up. An intra frame takes the costliest point that
fits the bucket and whose inter frames the budget can then sustain. The edge codes the frame, and when it does
not fit codes it again at the point its measured size says would (at most MAX_TRIALS codings; the codec takes
about a millisecond). A frame that would overflow the bucket even at the cheapest point is dropped only when
dropping is allowed (live sources, inter frames), and counted. In live streams an intra frame is also kept
within LIVE_INTRA_MAX_S of the budget: on a link of that rate its bytes are latency.

`budget_bps` can be lowered and raised while streaming (services/edge/backpressure.py does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from splitinfer.codec.ladder import CodecLadder
from splitinfer.errors import ServiceError

DEFAULT_BUFFER_S = 2.0
MIN_RATE_KBPS = 1.0
# The bucket level the controller steers to at each intra frame, as a fraction of its size.
TARGET_FULLNESS = 0.3
# Inter frames switch down when the bucket would pass this fraction of its size.
HIGH_WATER = 0.9
# The gap between the bucket's level and its target is spread over this many seconds of frames.
RECOVERY_S = 1.0
# An inter frame keeps its point while the point's predicted size is within this fraction of the frame's target.
SWITCH_TOLERANCE = 0.25
# Live streams: an intra frame may take at most this many seconds of the budget (its bytes are latency).
LIVE_INTRA_MAX_S = 0.25
MAX_TRIALS = 3
_LEARNING_RATE = 0.3
_INITIAL_INTER_RATIO = 0.05  # inter / calibrated intra bytes until measured (low: unused budget is lost, debt is not)


class Coded(Protocol):
    @property
    def nbytes(self) -> int: ...


C = TypeVar("C", bound=Coded)


@dataclass
class RateStats:
    """What the controller did, for logs, metrics and benchmarks."""

    frames: int = 0
    bytes: int = 0
    dropped: int = 0
    switches: int = 0
    trials: int = 0
    overflow_bytes: int = 0  # bytes sent beyond the bucket's size (paid back by later frames)
    underflow_bytes: int = 0  # budget left unused (the costliest point was cheaper than the budget)
    frames_per_point: list[int] = field(default_factory=list)
    first_time_s: float | None = None
    last_time_s: float | None = None

    def seconds(self, frame_interval_s: float) -> float:
        """Source time covered, counting the last frame's interval."""
        if self.first_time_s is None or self.last_time_s is None:
            return 0.0
        return self.last_time_s - self.first_time_s + frame_interval_s


@dataclass(frozen=True)
class FramePlan:
    """The controller's decision for one frame: the point to try first and the bytes the frame may use."""

    point: int
    allowance: float  # bytes the frame may use at `point` or below
    limit: float  # bytes that fit in the bucket at all
    intra: bool
    climb_allowance: float = 0.0  # > 0: the frame may try the next point up within this many bytes


class RateController:
    """Chooses a ladder point per frame to hold `budget_bps` (see the module docstring)."""

    def __init__(self, ladder: CodecLadder, elements: int, budget_bps: float, *,
                 buffer_s: float = DEFAULT_BUFFER_S, allow_drop: bool = False) -> None:
        if not (math.isfinite(budget_bps) and budget_bps >= MIN_RATE_KBPS * 1000):
            raise ServiceError(f"the rate budget must be at least {MIN_RATE_KBPS:g} kbit/s, got {budget_bps / 1000:g}.")
        if not (math.isfinite(buffer_s) and buffer_s > 0):
            raise ServiceError(f"the rate buffer must be a positive number of seconds, got {buffer_s}.")
        if elements < 1:
            raise ServiceError(f"the cut must send at least one element, got {elements}.")
        self.ladder = ladder
        self.elements = elements
        self.ceiling_bps = float(budget_bps)
        self.budget_bps = float(budget_bps)
        self.buffer_s = buffer_s
        self.allow_drop = allow_drop
        self.stats = RateStats(frames_per_point=[0] * len(ladder.points))
        self._fullness = 0.0
        self._last_time_s: float | None = None
        self._interval_s: float | None = None  # smoothed source time between frames
        # Actual / calibrated bytes: intra frames (one scale), inter frames (per point, None until coded there;
        # the nearest point coded stands in).
        self._intra_scale = 1.0
        self._inter_scale: list[float | None] = [None] * len(ladder.points)
        self._point = 0

    @property
    def point(self) -> int:
        """The point of the last frame sent."""
        return self._point

    @property
    def buffer_bytes(self) -> float:
        return self.budget_bps / 8 * self.buffer_s

    @property
    def frame_interval_s(self) -> float:
        return self._interval_s or 0.1

    def set_budget(self, budget_bps: float) -> None:
        """Lower (or raise, up to the configured budget) the rate from now on."""
        self.budget_bps = min(self.ceiling_bps, max(MIN_RATE_KBPS * 1000, budget_bps))

    def predict(self, point: int, intra: bool) -> float:
        """Expected bytes of a frame coded at `point`."""
        calibrated = self.ladder.bits_per_element(point) * self.elements / 8
        if intra:
            return calibrated * self._intra_scale
        known = [(abs(p - point), scale) for p, scale in enumerate(self._inter_scale) if scale is not None]
        return calibrated * (min(known)[1] if known else _INITIAL_INTER_RATIO)

    def plan(self, time_s: float, intra: bool) -> FramePlan:
        """Drain the bucket to `time_s` (source seconds) and choose the point to try for this frame."""
        if self._last_time_s is not None:
            elapsed = max(0.0, time_s - self._last_time_s)
            if elapsed > 0:
                self._interval_s = elapsed if self._interval_s is None else 0.9 * self._interval_s + 0.1 * elapsed
            drained = self.budget_bps / 8 * elapsed
            if drained > self._fullness:
                self.stats.underflow_bytes += int(drained - self._fullness)
            self._fullness = max(0.0, self._fullness - drained)
        self._last_time_s = time_s
        per_frame = self.budget_bps / 8 * self.frame_interval_s
        size = self.buffer_bytes
        limit = max(0.0, size - self._fullness) + per_frame
        count = len(self.ladder.points)
        recovery_frames = max(1.0, RECOVERY_S / self.frame_interval_s)
        gap = TARGET_FULLNESS * size - self._fullness
        if intra:
            if self.allow_drop:
                limit = min(limit, max(per_frame, self.budget_bps / 8 * LIVE_INTRA_MAX_S))
            # The intra frame's bytes join the gap; the inter frames after it must fit what is left.
            fitting = [p for p in range(count) if self.predict(p, True) <= limit and self.predict(p, False)
                       <= per_frame + (gap - self.predict(p, True)) / recovery_frames]
            return FramePlan(max(fitting, default=0), limit, limit, True)
        allowance = max(0.0, HIGH_WATER * size - self._fullness) + per_frame
        target = min(allowance, max(0.0, per_frame + gap / recovery_frames))
        point = self._point
        if self.predict(point, False) > (1 + SWITCH_TOLERANCE) * target:
            point = self._costliest_within(target, below=point)
        while point > 0 and self.predict(point, False) > allowance:
            point -= 1
        climb = 0.0
        if point == self._point and point + 1 < count and self.predict(point, False) < (1 - SWITCH_TOLERANCE) * target:
            # The switch frame refines the whole reference: it may fill the bucket up to its target level.
            climb = min(allowance, per_frame + max(0.0, gap))
        return FramePlan(point, allowance, limit, False, climb)

    def _costliest_within(self, nbytes: float, below: int) -> int:
        """The costliest point under `below` whose predicted inter frame fits `nbytes` (0 when none does)."""
        return max((p for p in range(below) if self.predict(p, False) <= nbytes), default=0)

    def code_frame(self, time_s: float, intra: bool, code: Callable[[int], C]) -> tuple[int, C] | None:
        """The trial loop: code the frame at the planned point (`code(point)`), and while it does not fit, again at
        the point its measured size says would; with room to spare, try one point higher (each coding teaches the
        controller that point's size).
        Returns the point and coding sent, None for a frame dropped."""
        plan = self.plan(time_s, intra)
        point, coded, trials = plan.point, code(plan.point), 1
        fits = self.fits(plan, point, coded.nbytes)
        while not fits and point > 0 and trials < MAX_TRIALS:
            point = self._scaled_down(point, coded.nbytes, plan.allowance)
            coded = code(point)
            trials += 1
            fits = self.fits(plan, point, coded.nbytes)
        if fits and plan.climb_allowance > 0 and point + 1 < len(self.ladder.points) and trials < MAX_TRIALS:
            higher = code(point + 1)
            trials += 1
            if higher.nbytes <= plan.climb_allowance:
                point, coded = point + 1, higher
        if self.should_drop(plan, coded.nbytes):
            self.dropped()
            return None
        self.sent(point, coded.nbytes, trials)
        return point, coded

    def _scaled_down(self, point: int, nbytes: int, allowance: float) -> int:
        """The point to code next after `point` gave `nbytes` over `allowance`: the costliest lower point whose
        calibrated rate, scaled by what this frame measured, fits; at least one point lower."""
        rate = self.ladder.bits_per_element
        fitting = [p for p in range(point) if nbytes * rate(p) / rate(point) <= allowance]
        return max(fitting, default=0)

    def fits(self, plan: FramePlan, point: int, nbytes: int) -> bool:
        """Learn from a coded trial; True when its bytes fit the frame's allowance."""
        if plan.intra or point == self._point:  # a switch costs more than the point's steady frames
            self._learn(point, plan.intra, nbytes)
        return nbytes <= plan.allowance

    def should_drop(self, plan: FramePlan, nbytes: int) -> bool:
        """True when a frame of `nbytes` would overflow the bucket and dropping is allowed (inter frames only)."""
        return self.allow_drop and not plan.intra and nbytes > plan.limit

    def dropped(self) -> None:
        self.stats.dropped += 1

    def sent(self, point: int, nbytes: int, trials: int) -> None:
        """The frame went out at `point` with `nbytes`: fill the bucket."""
        if point != self._point:
            self.stats.switches += 1
        self._point = point
        # Bytes beyond the bucket stay in it as debt (later frames pay it back); they are counted as overflow.
        overflow = min(nbytes, self._fullness + nbytes - self.buffer_bytes)
        if overflow > 0:
            self.stats.overflow_bytes += int(overflow)
        self._fullness += nbytes
        stats = self.stats
        stats.frames += 1
        stats.bytes += nbytes
        stats.trials += trials
        stats.frames_per_point[point] += 1
        if stats.first_time_s is None:
            stats.first_time_s = self._last_time_s
        stats.last_time_s = self._last_time_s

    def describe_point(self, index: int) -> str:
        point = self.ladder.points[index]
        quantizer = point.quantizer or next(iter(point.tensors.values()), None)
        return f"#{index}" + (f" ({quantizer.levels} levels)" if quantizer is not None else "")

    def achieved_bps(self) -> float:
        """Bits sent per second of source time so far."""
        seconds = self.stats.seconds(self.frame_interval_s)
        return 8 * self.stats.bytes / seconds if seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: the rate achieved against the budget, and how the frames were coded."""
        stats = self.stats
        points = ", ".join(f"{self.describe_point(i)}: {n}" for i, n in enumerate(stats.frames_per_point) if n)
        return (f"rate control: {self.achieved_bps() / 1000:.1f} kbit/s of source time for a budget of "
                f"{self.ceiling_bps / 1000:g} kbit/s ({stats.frames} frames, {stats.bytes / max(stats.frames, 1):.0f} "
                f"B/frame, {stats.switches} switches, {stats.dropped} dropped; frames per point: {points})")

    def _learn(self, point: int, intra: bool, nbytes: int) -> None:
        calibrated = self.ladder.bits_per_element(point) * self.elements / 8
        observed = max(nbytes, 1) / calibrated
        if intra:
            self._intra_scale = _blend(self._intra_scale, observed)
            return
        known = self._inter_scale[point]
        self._inter_scale[point] = observed if known is None else _blend(known, observed)


def _blend(old: float, new: float) -> float:
    """Exponential smoothing in the log domain (sizes vary by factors, not by bytes)."""
    return math.exp((1 - _LEARNING_RATE) * math.log(old) + _LEARNING_RATE * math.log(new))
