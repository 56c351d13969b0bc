"""Pick the start time of a batch job under a SchedulingPolicy's timing settings.

Invariant: a job is never held past the latest start that still meets its
deadline (deadline - estimated duration - safety margin). When waiting cannot
help, the job runs now and the decision says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gensched.api.durations import parse_duration
from gensched.api.policy import TimingMode, TimingSpec
from gensched.timing.windows import next_window_start


@dataclass(frozen=True)
class TimingDecision:
    start: datetime
    deferred: bool
    reason: str
    warning: str | None = None


def decide_start(
    now: datetime,
    timing: TimingSpec,
    deadline: datetime | None,
    estimated: timedelta | None,
) -> TimingDecision:
    """Start now, or at the best allowed later time, never missing the deadline."""
    if timing.mode == TimingMode.IMMEDIATE:
        return TimingDecision(now, False, "timing mode Immediate: starting now")
    margin = parse_duration(timing.safety_margin)
    latest = now + parse_duration(timing.max_deferral)
    if deadline is not None:
        run = estimated or timedelta(0)
        by_deadline = deadline - run - margin
        if by_deadline <= now:
            return TimingDecision(
                now, False, "no slack before the deadline: starting now",
                warning=(f"batch.deadline {deadline.isoformat()} leaves no room after estimatedDuration and "
                         f"the {timing.safety_margin} safety margin; the job may finish late"),
            )
        latest = min(latest, by_deadline)
    if timing.mode == TimingMode.OFF_PEAK:
        start = next_window_start(timing.off_peak_windows, now, latest)
        if start is None:
            return TimingDecision(now, False, "no off-peak window opens before the latest safe start: starting now")
        if start <= now:
            return TimingDecision(now, False, "inside an off-peak window: starting now")
        return TimingDecision(start, True, f"deferred to the off-peak window opening {start.isoformat()}")
    return TimingDecision(
        now, False, "CarbonAware timing needs a carbon-intensity provider, not available yet: starting now",
        warning="timing.mode CarbonAware is not implemented in this version; jobs start immediately",
    )
