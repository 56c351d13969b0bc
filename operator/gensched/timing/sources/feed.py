"""A provider behind a cache, with the documented fallback order.

1. the provider's data (its forecast, or a seasonal forecast from its past
   values when it has none or the policy says ``forecaster: History``);
2. the last good data, while younger than ``timing.carbon.maxAge``;
3. nothing: the planner then uses the off-peak windows, else runs the job now.
Every step down is reported in ``degraded`` so the operator can set a condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from gensched.timing.forecast import SeasonalForecaster
from gensched.timing.series import Series
from gensched.timing.sources.base import CarbonSource, SignalError

FORECAST_LOOKBACK = timedelta(days=29)  # what the seasonal forecaster uses
PROVIDER_LOOKBACK = timedelta(hours=2)


@dataclass(frozen=True)
class FeedResult:
    forecast: Series | None  # from the slot containing ``now`` on
    origin: str  # human-readable: provider, forecast kind, freshness
    degraded: str | None = None  # why this is not fresh provider data


@dataclass
class _Cached:
    series: Series
    fetched_at: datetime


class SignalFeed:
    def __init__(self, source: CarbonSource, history_forecast: bool = False,
                 refresh: timedelta = timedelta(minutes=15), max_age: timedelta = timedelta(hours=6)) -> None:
        self.source = source
        self.history_forecast = history_forecast or not source.has_forecast
        self.refresh = refresh
        self.max_age = max_age
        self._cache: _Cached | None = None
        self.last_error: str | None = None

    def get(self, now: datetime, until: datetime) -> FeedResult:
        c = self._cache
        if c is not None and now - c.fetched_at < self.refresh and c.series.end > now:
            return FeedResult(self._forecast(c.series, now, until), self._origin(c, now))
        try:
            back = FORECAST_LOOKBACK if self.history_forecast else PROVIDER_LOOKBACK
            series = self.source.fetch(now - back, until)
            if series.index_at(now) >= len(series) or series.index_at(now) < 0:
                raise SignalError(f"{self.source.name}: no value for now ({now.isoformat()}); the data covers "
                                  f"{series.start.isoformat()}..{series.end.isoformat()} (stale signal)")
            self._cache = _Cached(series, now)
            self.last_error = None
            return FeedResult(self._forecast(series, now, until), self._origin(self._cache, now))
        except SignalError as exc:
            self.last_error = str(exc)
        if c is not None and now - c.fetched_at <= self.max_age and c.series.end > now:
            age = int((now - c.fetched_at).total_seconds() // 60)
            return FeedResult(self._forecast(c.series, now, until), self._origin(c, now),
                              degraded=f"{self.last_error}; using data fetched {age} min ago")
        return FeedResult(None, self.source.name, degraded=self.last_error)

    def _origin(self, c: _Cached, now: datetime) -> str:
        kind = "seasonal forecast from its history" if self.history_forecast else "its forecast"
        return f"{self.source.name} ({kind}, fetched {c.fetched_at.isoformat()})"

    def _forecast(self, series: Series, now: datetime, until: datetime) -> Series:
        i = series.index_at(now)
        if not self.history_forecast:
            return Series(series.time_at(i), series.step, series.values[i:])
        history = Series(series.start, series.step, series.values[: i + 1])
        steps = max(1, int(np.ceil((until - series.time_at(i)) / series.step)))
        fc = SeasonalForecaster().forecast(history, steps - 1)
        return Series(series.time_at(i), series.step, np.concatenate(([series.values[i]], fc.values)))
