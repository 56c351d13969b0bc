"""Regular time series (carbon intensity, prices, forecasts) on a fixed step, timezone-aware.

Planning works on slot indices; this keeps the mapping between instants and
slots in one place so no caller does its own date arithmetic.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

MAX_SLOTS = 2_000_000  # 19 years of 5-minute slots: a series from a file or an API never needs more


def as_utc(t: datetime) -> datetime:
    """Naive datetimes are taken as UTC (the shared CSVs are UTC); aware ones are converted."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass(frozen=True)
class Series:
    """``values[i]`` holds for ``[start + i*step, start + (i+1)*step)``."""

    start: datetime
    step: timedelta
    values: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", as_utc(self.start))
        object.__setattr__(self, "values", np.asarray(self.values, dtype=np.float64))
        if self.step <= timedelta(0):
            raise ValueError("series step must be positive")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def end(self) -> datetime:
        return self.start + self.step * len(self.values)

    def time_at(self, i: int) -> datetime:
        return self.start + self.step * i

    def index_at(self, t: datetime) -> int:
        """Slot containing ``t`` (may be outside ``0..len-1``)."""
        return math.floor((as_utc(t) - self.start) / self.step)

    def index_ceil(self, t: datetime) -> int:
        """First slot starting at or after ``t``."""
        return math.ceil((as_utc(t) - self.start) / self.step)

    def value_at(self, t: datetime) -> float:
        i = self.index_at(t)
        if not 0 <= i < len(self.values):
            raise KeyError(f"{t.isoformat()} is outside the series [{self.start.isoformat()}, {self.end.isoformat()})")
        return float(self.values[i])

    def slice(self, t0: datetime, t1: datetime) -> Series:
        """Slots overlapping ``[t0, t1)``, clipped to the data held."""
        i0 = max(0, self.index_at(t0))
        i1 = min(len(self.values), self.index_ceil(t1))
        return Series(self.time_at(i0), self.step, self.values[i0:max(i0, i1)])

    def resample(self, step: timedelta, how: str = "sample") -> Series:
        """Change the step. ``sample`` keeps the value at each new slot start (Let's Wait Awhile
        does this); ``mean`` averages; a coarser series is repeated to a finer step."""
        if step == self.step:
            return self
        if step > self.step:
            k = step / self.step
            if k != int(k):
                raise ValueError(f"cannot resample step {self.step} to {step}: not a multiple")
            k = int(k)
            n = len(self.values) // k
            block = self.values[: n * k].reshape(n, k)
            vals = block[:, 0] if how == "sample" else block.mean(axis=1)
            return Series(self.start, step, vals)
        k = self.step / step
        if k != int(k):
            raise ValueError(f"cannot resample step {self.step} to {step}: not a divisor")
        return Series(self.start, step, np.repeat(self.values, int(k)))

    def since(self, t: datetime) -> Series:
        return self.slice(t, self.end)

    def until(self, t: datetime) -> Series:
        """History strictly before ``t``: what a forecaster may see at time ``t``."""
        return self.slice(self.start, t)


def series_from_points(points: list[tuple[datetime, float]], step: timedelta | None = None) -> Series:
    """A regular series from (time, value) points: the step is the smallest gap unless given,
    duplicates keep the last value, gaps repeat the previous value."""
    if not points:
        raise ValueError("no data points")
    pts = sorted((as_utc(t), float(v)) for t, v in points)
    if step is None:
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(pts) if b[0] > a[0]]
        step = min(gaps) if gaps else timedelta(minutes=30)
    t0 = pts[0][0]
    n = math.floor((pts[-1][0] - t0) / step) + 1
    if n > MAX_SLOTS:
        raise ValueError(f"the data spans {pts[-1][0] - t0} on a {step} step: {n} slots, more than the "
                         f"{MAX_SLOTS} a series may hold (a stray row far from the others?)")
    out = np.full(n, np.nan)
    for t, v in pts:
        out[math.floor((t - t0) / step)] = v
    missing = np.isnan(out)
    if missing.any():
        idx = np.where(~missing, np.arange(n), 0)
        np.maximum.accumulate(idx, out=idx)
        out = out[idx]
    return Series(t0, step, out)
