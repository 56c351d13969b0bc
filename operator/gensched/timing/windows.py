"""Recurring off-peak windows (local time, any IANA timezone) as concrete UTC intervals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from gensched.api.durations import MAX_DURATION
from gensched.api.policy import OffPeakWindow

_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def _hm(text: str) -> time:
    h, m = text.split(":")
    return time(int(h), int(m))


def window_intervals(
    windows: list[OffPeakWindow], start: datetime, horizon: timedelta, holidays: list[str] | None = None
) -> Iterator[tuple[datetime, datetime]]:
    """All window occurrences overlapping [start, start + horizon), in time order (UTC).
    A holiday (YYYY-MM-DD in the window's timezone) is off-peak all day. The horizon is capped
    at :data:`MAX_DURATION` (nothing is planned further ahead), which bounds the work done."""
    horizon = min(horizon, MAX_DURATION)
    end = start + horizon
    off_days = {date.fromisoformat(h) for h in holidays or []}
    out: list[tuple[datetime, datetime]] = []
    for w in windows:
        tz = ZoneInfo(w.timezone)
        first: date = start.astimezone(tz).date() - timedelta(days=1)
        days = int(horizon.total_seconds() // 86400) + 3
        for d in range(days):
            day = first + timedelta(days=d)
            if day in off_days:
                s_utc = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
                e_utc = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
                if e_utc > start and s_utc < end:
                    out.append((max(s_utc, start), e_utc))
            if _DAYS[day.weekday()] not in w.days:
                continue
            s_local = datetime.combine(day, _hm(w.start), tzinfo=tz)
            e_day = day if w.end > w.start else day + timedelta(days=1)
            e_local = datetime.combine(e_day, _hm(w.end), tzinfo=tz)
            s_utc, e_utc = s_local.astimezone(UTC), e_local.astimezone(UTC)
            if e_utc > start and s_utc < end:
                out.append((max(s_utc, start), e_utc))
    yield from sorted(out)


def next_window_start(
    windows: list[OffPeakWindow], now: datetime, latest_start: datetime, holidays: list[str] | None = None
) -> datetime | None:
    """Earliest instant in a window, at or after ``now`` and no later than ``latest_start``."""
    if latest_start < now:
        return None
    for s, _e in window_intervals(windows, now, latest_start - now + timedelta(seconds=1), holidays):
        if s <= latest_start:
            return s
    return None


def price_at(windows: list[OffPeakWindow], t: datetime, default: float, holidays: list[str] | None = None) -> float:
    """Electricity price at ``t``: the cheapest priced window containing it, else ``default``."""
    best = default
    for w in windows:
        if w.price_per_kwh is None:
            continue
        for s, e in window_intervals([w], t, timedelta(seconds=1), holidays):
            if s <= t < e:
                best = min(best, w.price_per_kwh)
    return best
