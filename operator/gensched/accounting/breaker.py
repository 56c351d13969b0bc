"""Circuit breaker for serving: spend that grows faster than useful output.

Over a window of samples ``(t, gpus held, requests served so far)`` the breaker compares the window's
first half with its second half:

    spend growth  = GPU-seconds(late) / GPU-seconds(early)
    output growth = requests(late) / requests(early)

It opens when spend rose (growth > 1) and ``spend growth >= factor x output growth``, that is when
GPU-seconds per request rose by ``factor`` or more; with no requests in either half it opens when spend
alone rose by ``factor``. It also opens when the late half's spend rate, kept up until the end of the
budget period, would use more GPU-seconds than the budget has left. Otherwise it stays closed, and with
too little data (under three samples, no spend in the early half, or a window less than half covered)
it says so and stays closed. A counter of requests that goes backwards restarted from zero.

The function is memoryless; the caller latches an open breaker until an admin resets it and then judges
only samples taken after the reset (``since``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from gensched.timing.series import as_utc


class BreakerReason(StrEnum):
    STEADY = "Steady"
    INSUFFICIENT_DATA = "InsufficientData"
    SPEND_OUTPACED_OUTPUT = "SpendOutpacedOutput"
    BUDGET_RATE = "BudgetRate"


@dataclass(frozen=True)
class ServeSample:
    t: datetime
    gpus: float  # GPUs held from now on (replicas x GPUs per replica)
    requests: float  # requests served, cumulative counter


@dataclass(frozen=True)
class BreakerVerdict:
    open: bool
    reason: BreakerReason
    message: str
    spend_growth: float | None = None
    output_growth: float | None = None


def _ok(x: float) -> float:
    return x if math.isfinite(x) and x >= 0 else 0.0


def _halves(samples: list[ServeSample], mid: datetime) -> tuple[float, float, float, float]:
    """GPU-seconds and requests in [start, mid) and [mid, end], intervals split pro rata."""
    gs = [0.0, 0.0]
    req = [0.0, 0.0]
    for a, b in itertools.pairwise(samples):
        dt = (b.t - a.t).total_seconds()
        if dt <= 0:
            continue
        d = _ok(b.requests) - _ok(a.requests)
        served = d if d >= 0 else _ok(b.requests)  # reset: counted from zero
        early = min(1.0, max(0.0, (mid - a.t).total_seconds() / dt))
        g = _ok(a.gpus) * dt
        gs[0] += g * early
        gs[1] += g * (1 - early)
        req[0] += served * early
        req[1] += served * (1 - early)
    return gs[0], gs[1], req[0], req[1]


def circuit_breaker(samples: Sequence[ServeSample], factor: float, window: timedelta, *,
                    now: datetime | None = None, since: datetime | None = None, min_requests: float = 1.0,
                    budget_gpu_seconds_left: float | None = None,
                    period_seconds_left: float | None = None) -> BreakerVerdict:
    """Open or closed, and why, for the samples in ``(now - window, now]`` (after ``since``)."""
    if not factor > 1:
        raise ValueError(f"circuit breaker factor {factor}: must be above 1 (e.g. 2)")
    if window <= timedelta(0):
        raise ValueError("circuit breaker window must be longer than zero")
    pts = sorted((ServeSample(as_utc(s.t), s.gpus, s.requests) for s in samples), key=lambda s: s.t)
    end = as_utc(now) if now is not None else (pts[-1].t if pts else None)
    if end is None:
        return BreakerVerdict(False, BreakerReason.INSUFFICIENT_DATA, "no samples yet")
    lo = end - window
    if since is not None:
        lo = max(lo, as_utc(since))
    pts = [s for s in pts if lo <= s.t <= end]
    if len(pts) < 3 or (pts[-1].t - pts[0].t) < window / 2:
        return BreakerVerdict(False, BreakerReason.INSUFFICIENT_DATA,
                              f"{len(pts)} samples over {pts[-1].t - pts[0].t if pts else timedelta(0)} "
                              f"(needs 3 over at least half the {window} window)")
    mid = pts[0].t + (pts[-1].t - pts[0].t) / 2
    gs_e, gs_l, req_e, req_l = _halves(pts, mid)
    late_s = (pts[-1].t - mid).total_seconds()
    if budget_gpu_seconds_left is not None and period_seconds_left is not None and late_s > 0:
        projected = gs_l / late_s * max(0.0, period_seconds_left)
        if projected > max(0.0, budget_gpu_seconds_left):
            return BreakerVerdict(True, BreakerReason.BUDGET_RATE,
                                  f"at {gs_l / late_s:.3g} GPUs the rest of the period needs "
                                  f"{projected / 3600:.3g} GPU-hours, {max(0.0, budget_gpu_seconds_left) / 3600:.3g} "
                                  "are left in the budget")
    if gs_e <= 0:
        return BreakerVerdict(False, BreakerReason.INSUFFICIENT_DATA, "no GPU time in the window's first half")
    spend = gs_l / gs_e
    if req_e >= min_requests:
        output = req_l / req_e
    elif req_l >= min_requests:
        output = math.inf  # output appeared: never a runaway
    else:
        output = 1.0  # nothing served in either half: judge spend alone
    opened = spend > 1 + 1e-6 and spend >= factor * output  # rounding of equal halves is not a rise
    per_req = (f"GPU-seconds per request {gs_e / req_e:.3g} -> {gs_l / req_l:.3g}"
               if req_e >= min_requests and req_l >= min_requests else f"requests {req_e:.0f} -> {req_l:.0f}")
    msg = f"spend x{spend:.2f}, output x{output:.2f} over {window} ({per_req}; opens at x{factor:g})"
    return BreakerVerdict(opened, BreakerReason.SPEND_OUTPACED_OUTPUT if opened else BreakerReason.STEADY, msg,
                          spend, output if math.isfinite(output) else None)


def latch(was_open: bool, verdict: BreakerVerdict, reset: bool) -> bool:
    """An open breaker stays open until reset; a reset closes it (judge only later samples after it)."""
    if reset:
        return False
    return was_open or verdict.open
