"""Pick when a batch job runs under a SchedulingPolicy's timing settings.

Invariant: a job is never held past the latest start that still meets its
deadline (deadline - estimated duration - safety margin). When waiting cannot
help, the job runs now and the decision says why. CarbonAware plans on a
forecast (gCO2/kWh per slot) handed in by the caller: the planner never fetches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from gensched.api.durations import MAX_DURATION, parse_duration
from gensched.api.errors import bounded
from gensched.api.policy import Objective, TimingMode, TimingSpec
from gensched.timing.forecast import denoise
from gensched.timing.series import Series
from gensched.timing.slots import best_start, cheapest_slots
from gensched.timing.windows import next_window_start, price_at

DEFAULT_RUN = timedelta(hours=1)  # assumed when a job gives no estimatedDuration


@dataclass(frozen=True)
class TimingDecision:
    start: datetime
    deferred: bool
    reason: str
    warning: str | None = None
    slots: tuple[tuple[datetime, datetime], ...] = field(default=())  # when it runs (interruptible: several)
    expected_intensity: float | None = None  # gCO2/kWh, mean over the planned run (forecast)
    now_intensity: float | None = None  # same, had it started now

    @property
    def saving_pct(self) -> float | None:
        if self.expected_intensity is None or not self.now_intensity:
            return None
        return 100.0 * (1 - self.expected_intensity / self.now_intensity)


def _add(t: datetime, d: timedelta) -> datetime:
    """``t + d`` saturating at the ends of the calendar instead of raising OverflowError."""
    try:
        return t + d
    except OverflowError:
        edge = datetime.max if d > timedelta(0) else datetime.min
        return edge.replace(tzinfo=t.tzinfo)


def latest_end(now: datetime, timing: TimingSpec, deadline: datetime | None, run: timedelta) -> datetime:
    """When the run must be over: the deadline minus the safety margin, and never later than
    ``maxDeferral`` after now plus the run itself."""
    cap = _add(_add(now, parse_duration(timing.max_deferral)), run)
    if deadline is None:
        return cap
    return min(cap, _add(deadline, -parse_duration(timing.safety_margin)))


def decide_start(
    now: datetime,
    timing: TimingSpec,
    deadline: datetime | None,
    estimated: timedelta | None,
    forecast: Series | None = None,
    interruptible: bool = False,
    degraded: str | None = None,
    usable: np.ndarray | None = None,
) -> TimingDecision:
    """Start now, or at the best allowed later time, never missing the deadline.

    ``forecast`` (CarbonAware) covers at least the slot containing ``now``; ``degraded`` says
    why there is none (the decision then falls back to off-peak windows, else now);
    ``usable`` marks forecast slots (from the one containing ``now``) with free GPU capacity.
    """
    if timing.mode == TimingMode.IMMEDIATE:
        return TimingDecision(now, False, "timing mode Immediate: starting now")
    run = estimated or DEFAULT_RUN
    if run > MAX_DURATION:
        return TimingDecision(now, False, "the estimated run is too long to plan: starting now",
                              warning=f"estimatedDuration is over {MAX_DURATION.days}d; the plan ignores timing")
    try:
        return _decide(now, timing, deadline, run, forecast, interruptible, degraded, usable)
    except (OverflowError, ValueError, KeyError, OSError) as exc:
        # Validation refuses such policies; a policy that slipped through (an older operator
        # stored it, a test built it unchecked) must still never stop the job's lifecycle.
        why = bounded(f"{exc.__class__.__name__}: {exc}", 300)
        return TimingDecision(now, False, "the policy's timing settings cannot be applied: starting now",
                              warning=f"timing settings unusable ({why}); fix the SchedulingPolicy")


def _decide(now: datetime, timing: TimingSpec, deadline: datetime | None, run: timedelta,
            forecast: Series | None, interruptible: bool, degraded: str | None,
            usable: np.ndarray | None) -> TimingDecision:
    end = latest_end(now, timing, deadline, run)
    if _add(end, -run) <= now:
        warning = None
        if deadline is not None and end < _add(now, run):
            warning = (f"batch.deadline {deadline.isoformat()} leaves no room after estimatedDuration and "
                       f"the {timing.safety_margin} safety margin; the job may finish late")
        return TimingDecision(now, False, "no slack before the deadline: starting now", warning=warning)
    if timing.mode == TimingMode.OFF_PEAK or (timing.mode == TimingMode.CARBON_AWARE and forecast is None):
        return _off_peak(now, timing, _add(end, -run), degraded)
    assert forecast is not None
    return _carbon(now, timing, forecast, run, end, interruptible, usable)


def _off_peak(now: datetime, timing: TimingSpec, latest: datetime, degraded: str | None) -> TimingDecision:
    why = f"carbon signal unavailable ({degraded}); " if degraded else ""
    warning = f"{why}using off-peak windows" if degraded and timing.off_peak_windows else (
        f"{why}starting now" if degraded else None)
    start = next_window_start(timing.off_peak_windows, now, latest, timing.holidays) if timing.off_peak_windows \
        else None
    if start is None:
        return TimingDecision(now, False, f"{why}no off-peak window opens before the latest safe start: "
                                          "starting now", warning=warning)
    if start <= now:
        return TimingDecision(now, False, f"{why}inside an off-peak window: starting now", warning=warning)
    return TimingDecision(start, True, f"{why}deferred to the off-peak window opening {start.isoformat()}",
                          warning=warning)


def _carbon(now: datetime, timing: TimingSpec, forecast: Series, run: timedelta, end: datetime,
            interruptible: bool, usable: np.ndarray | None) -> TimingDecision:
    first = forecast.index_at(now)
    if not 0 <= first < len(forecast):
        return _off_peak(now, timing, _add(end, -run), "the forecast does not cover now")
    ci = forecast.values[first:]
    n = max(1, math.ceil(run / forecast.step))
    # Slot k starts at now (k = 0) or at the slot boundary; the run must be over by ``end``.
    horizon = min(len(ci), max(0, math.floor((end - forecast.time_at(first)) / forecast.step)))
    if horizon < n:
        return TimingDecision(now, False, "the forecast does not reach past the run: starting now")
    cost = _cost(timing, forecast, first, ci)
    cost = denoise(cost, timing.smoothing_slots)
    use = None if usable is None else usable[: len(cost)]
    if interruptible:
        picked = cheapest_slots(cost, n, horizon, use)
    else:
        s = best_start(cost, n, horizon, use)
        picked = None if s is None else np.arange(s, s + n)
    if picked is None:
        return TimingDecision(now, False, "no slot with free GPU capacity before the deadline: starting now",
                              warning="capacity for deferred work is exhausted until the deadline")
    expected = float(ci[picked].mean())
    at_now = float(ci[:n].mean())
    starts = [now if k == 0 else forecast.time_at(first + int(k)) for k in picked]
    intervals = _merge([(s, forecast.time_at(first + int(k) + 1)) for s, k in zip(starts, picked, strict=True)])
    if not interruptible:
        intervals = ((starts[0], starts[0] + run),)
    start = starts[0]
    if start <= now:
        return TimingDecision(now, False, f"now is the best time before the deadline ({expected:.0f} gCO2/kWh)",
                              slots=intervals, expected_intensity=expected, now_intensity=at_now)
    return TimingDecision(start, True, f"deferred to {start.isoformat()}: forecast {expected:.0f} vs "
                                       f"{at_now:.0f} gCO2/kWh now", slots=intervals,
                          expected_intensity=expected, now_intensity=at_now)


def _cost(timing: TimingSpec, forecast: Series, first: int, ci: np.ndarray) -> np.ndarray:
    if timing.objective == Objective.EMISSIONS:
        return ci
    price = np.array([price_at(timing.off_peak_windows, forecast.time_at(first + k), timing.default_price_per_kwh,
                               timing.holidays) for k in range(len(ci))])
    if timing.objective == Objective.COST:
        return price
    w = timing.carbon_weight
    return w * ci / max(float(ci.mean()), 1e-9) + (1 - w) * price / max(float(price.mean()), 1e-9)


def _merge(intervals: list[tuple[datetime, datetime]]) -> tuple[tuple[datetime, datetime], ...]:
    out: list[tuple[datetime, datetime]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return tuple(out)
