"""Backpressure for live streams: lower the rate budget when the link carries less, climb back when it recovers.

The edge sees what the link carries from its own stream: each result says when its frame's bytes got
through (the round trip minus the cloud's own time), and the results of the last seconds say how many
bytes per second the link delivered. When a frame's network delay grows beyond the smallest one seen by
more than a queueing allowance plus the time its own bytes take at the budget's rate, bytes are queueing
somewhere on the path: the budget drops to below what
was delivered (multiplicative decrease, at most once per round trip). While delays stay low the budget
climbs back towards the configured one at a fixed share per second (additive increase), like TCP's AIMD.
The in-flight window bounds how many frames can queue meanwhile; old frames are dropped by the live
grabber, never queued without bound.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from splitinfer.services.edge.rate_control import RateController

# Extra delay over the smallest seen that counts as queueing: this or two frame intervals, the larger.
QUEUEING_ALLOWANCE_S = 0.15
DECREASE = 0.8  # the new budget, as a share of what the link delivered
INCREASE_PER_S = 0.1  # share of the configured budget regained per second without queueing
GOODPUT_WINDOW_S = 2.0
BASE_DELAY_WINDOW_S = 30.0


@dataclass
class BackpressureStats:
    decreases: int = 0
    lowest_budget_bps: float = 0.0


class LinkMonitor:
    """Feeds the link's delivered rate and queueing delay back into a RateController (see module docstring)."""

    def __init__(self, rate: RateController) -> None:
        self.rate = rate
        self.stats = BackpressureStats(lowest_budget_bps=rate.budget_bps)
        self._delivered: collections.deque[tuple[float, int]] = collections.deque(maxlen=4096)
        self._delays: collections.deque[tuple[float, float]] = collections.deque(maxlen=4096)
        self._last_update: float | None = None
        self._hold_until = 0.0

    def goodput_bps(self, now: float) -> float | None:
        """Bits per second the link delivered over the last GOODPUT_WINDOW_S (None: too few results yet)."""
        while self._delivered and self._delivered[0][0] < now - GOODPUT_WINDOW_S:
            self._delivered.popleft()
        if len(self._delivered) < 2:
            return None
        span = max(now - self._delivered[0][0], self.rate.frame_interval_s)
        return 8 * sum(nbytes for _, nbytes in self._delivered) / span

    def on_result(self, now: float, sent: float, nbytes: int, cloud_seconds: float) -> None:
        """A result arrived at `now` for a frame of `nbytes` sent at `sent` (monotonic seconds)."""
        delay = max(0.0, now - sent - cloud_seconds)
        self._delivered.append((now, nbytes))
        while self._delays and self._delays[0][0] < now - BASE_DELAY_WINDOW_S:
            self._delays.popleft()
        self._delays.append((now, delay))
        base = min(d for _, d in self._delays)
        # The frame's own bytes take time on a link of the budget's rate (an intra frame most): not queueing.
        own = 8 * nbytes / self.rate.budget_bps
        allowance = max(QUEUEING_ALLOWANCE_S, 2 * self.rate.frame_interval_s) + own
        elapsed = 0.0 if self._last_update is None else now - self._last_update
        self._last_update = now
        if delay > base + allowance:
            goodput = self.goodput_bps(now)
            if now >= self._hold_until and goodput is not None:
                self.rate.set_budget(min(self.rate.budget_bps, goodput) * DECREASE)
                self.stats.decreases += 1
                self.stats.lowest_budget_bps = min(self.stats.lowest_budget_bps, self.rate.budget_bps)
                self._hold_until = now + max(delay, 0.5)  # let the queue drain before judging again
            return
        if self.rate.budget_bps < self.rate.ceiling_bps:
            self.rate.set_budget(self.rate.budget_bps + INCREASE_PER_S * self.rate.ceiling_bps * elapsed)
