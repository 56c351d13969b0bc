"""Carbon-intensity forecasts when a provider gives none, and the error model of the benchmarks.

``SeasonalForecaster`` sees only the past: a time-of-day profile of the last
days, weekday-aware, plus the current deviation from that profile decaying
with the horizon. ``NoisyOracle`` is the error model of "Let's Wait Awhile":
the true future plus Gaussian noise (benchmarks only; it reads the future).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from gensched.timing.series import Series


@dataclass(frozen=True)
class SeasonalForecaster:
    """Forecast from history only: profile of the last ``days`` days at the same time of day,
    with same-kind days (workday / weekend) weighted up, plus the latest residual decaying
    with time constant ``decay``."""

    days: int = 28
    decay: timedelta = timedelta(hours=24)
    same_kind_weight: float = 6.0

    def forecast(self, history: Series, horizon_steps: int) -> Series:
        """``horizon_steps`` slots starting right after the last slot of ``history``."""
        per_day = round(timedelta(days=1) / history.step)
        n = len(history)
        if n < per_day:
            level = float(history.values[-1]) if n else 0.0
            return Series(history.end, history.step, np.full(horizon_steps, level))
        days = min(self.days, n // per_day)
        first = n - days * per_day
        past = history.values[first:].reshape(days, per_day)  # whole days; column 0 follows history's end
        step_h = history.step / timedelta(hours=1)
        start_h = history.start.weekday() * 24 + history.start.hour + history.start.minute / 60

        def weekend(idx: np.ndarray) -> np.ndarray:  # UTC weekday of slot ``idx`` of the history timeline
            return ((start_h + idx * step_h) // 24 % 7) >= 5
        cell_weekend = weekend(first + np.arange(days * per_day)).reshape(days, per_day)
        cols = np.arange(horizon_steps) % per_day
        target_weekend = weekend(n + np.arange(horizon_steps))
        recent = np.arange(1, days + 1, dtype=np.float64)[:, None]  # newer days weigh more
        w = recent * np.where(cell_weekend[:, cols] == target_weekend[None, :], self.same_kind_weight, 1.0)
        profile = (w * past[:, cols]).sum(axis=0) / w.sum(axis=0)
        last_kind = weekend(np.array([n - 1]))[0]
        last_w = recent[:, 0] * np.where(cell_weekend[:, -1] == last_kind, self.same_kind_weight, 1.0)
        residual = float(history.values[-1] - np.average(past[:, -1], weights=last_w))
        tau = self.decay / history.step
        out = profile + residual * np.exp(-(np.arange(horizon_steps) + 1) / tau)
        t0 = history.end
        return Series(t0, history.step, out)


@dataclass(frozen=True)
class NoisyOracle:
    """True series plus N(0, error x mean) noise, fixed per seed (one noisy copy per run, like the paper)."""

    noisy: Series

    @classmethod
    def of(cls, truth: Series, error: float, seed: int) -> NoisyOracle:
        rng = np.random.default_rng(seed)
        vals = truth.values + rng.normal(0.0, error * float(truth.values.mean()), size=len(truth))
        return cls(Series(truth.start, truth.step, vals))

    def window(self, t0: datetime, steps: int) -> np.ndarray:
        i = self.noisy.index_at(t0)
        return self.noisy.values[i:i + steps]


def mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error, in percent."""
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    ok = a != 0
    return float(np.mean(np.abs((a[ok] - p[ok]) / a[ok])) * 100)


def evaluate_forecaster(truth: Series, forecaster: SeasonalForecaster, horizon: timedelta,
                        every: timedelta = timedelta(hours=6), warmup: timedelta = timedelta(days=7)) -> float:
    """MAPE of ``forecaster`` over ``truth``: forecast from each ``every`` after ``warmup``,
    scored against what then happened (walk-forward; the forecaster never sees the future)."""
    steps = round(horizon / truth.step)
    stride = round(every / truth.step)
    errs: list[float] = []
    for end in range(round(warmup / truth.step), len(truth) - steps, stride):
        hist = Series(truth.start, truth.step, truth.values[:end])
        fc = forecaster.forecast(hist, steps)
        errs.append(mape(truth.values[end:end + steps], fc.values))
    return float(np.mean(errs)) if errs else float("nan")


def denoise(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over ``width`` slots (edges use the slots they have). Carbon
    intensity moves smoothly while forecast error is partly slot-to-slot noise, so ranking
    slots on the smoothed curve picks truly low periods more often than the raw argmin does."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if width <= 1 or n == 0:
        return v
    half = width // 2
    c = np.concatenate(([0.0], np.cumsum(v)))
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) + half + 1, 0, n)
    return (c[hi] - c[lo]) / (hi - lo)
