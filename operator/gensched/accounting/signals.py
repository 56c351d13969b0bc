"""Time-varying signals (carbon intensity, electricity price) averaged over a usage interval.

A signal is a ``Series`` (the carbon feeds, a price series), a callable ``t -> value`` (such as
``timing.windows.price_at`` bound to a policy's windows) or a constant. Accounting asks one
question of it: the mean value over ``[t0, t1)`` and how much of the interval that mean covers,
so energy used while no value was known is reported as such rather than silently priced at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gensched.timing.series import Series, as_utc

Signal = Series | Callable[[datetime], float] | float

# A callable is sampled at the middle of sub-intervals of at most this length (window prices
# change on HH:MM boundaries; operator samples are a minute or so apart).
CALLABLE_STEP = timedelta(minutes=5)
# A series is extended by its edge values this far (the newest slot of a live feed ends "now").
DEFAULT_EXTRAPOLATION = timedelta(hours=1)


@dataclass(frozen=True)
class Mean:
    """Mean value over the covered part of an interval; ``covered`` is a fraction in [0, 1]."""

    value: float
    covered: float


def mean_over(signal: Signal | None, t0: datetime, t1: datetime,
              extrapolation: timedelta = DEFAULT_EXTRAPOLATION) -> Mean:
    """Mean of ``signal`` over ``[t0, t1)``; NaN and out-of-range values count as not covered."""
    span = (t1 - t0).total_seconds()
    if signal is None or span <= 0:
        return Mean(0.0, 0.0)
    if isinstance(signal, int | float):
        v = float(signal)
        return Mean(v, 1.0) if math.isfinite(v) else Mean(0.0, 0.0)
    if isinstance(signal, Series):
        return _series_mean(signal, as_utc(t0), as_utc(t1), extrapolation)
    return _callable_mean(signal, t0, t1)


def _series_mean(s: Series, t0: datetime, t1: datetime, extra: timedelta) -> Mean:
    if len(s) == 0:
        return Mean(0.0, 0.0)
    lo, hi = s.start - extra, s.end + extra
    weighted = covered = 0.0
    a, b = max(t0, lo), min(t1, hi)
    if b > a:
        i0 = max(0, min(len(s) - 1, s.index_at(a)))
        i1 = max(0, min(len(s) - 1, s.index_at(b - timedelta(microseconds=1))))
        for i in range(i0, i1 + 1):
            # slot i extends to the extrapolated edges when it is the first or last slot
            start = lo if i == 0 else s.time_at(i)
            end = hi if i == len(s) - 1 else s.time_at(i + 1)
            overlap = (min(b, end) - max(a, start)).total_seconds()
            v = float(s.values[i])
            if overlap > 0 and math.isfinite(v):
                weighted += v * overlap
                covered += overlap
    span = (t1 - t0).total_seconds()
    return Mean(weighted / covered if covered else 0.0, min(1.0, covered / span))


def _callable_mean(f: Callable[[datetime], float], t0: datetime, t1: datetime) -> Mean:
    n = max(1, math.ceil((t1 - t0) / CALLABLE_STEP))
    step = (t1 - t0) / n
    good: list[float] = []
    for k in range(n):
        try:
            v = float(f(t0 + step * (k + 0.5)))
        except (ValueError, KeyError, LookupError, TypeError, ArithmeticError):
            continue
        if math.isfinite(v):
            good.append(v)
    return Mean(sum(good) / len(good), len(good) / n) if good else Mean(0.0, 0.0)
