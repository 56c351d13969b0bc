"""Recurring off-peak windows (local time, any IANA timezone) as concrete UTC intervals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from gensched.api.policy import OffPeakWindow

_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def _hm(text: str) -> time:
    h, m = text.split(":")
    return time(int(h), int(m))


def window_intervals(
    windows: list[OffPeakWindow], start: datetime, horizon: timedelta
) -> Iterator[tuple[datetime, datetime]]:
    """All window occurrences overlapping [start, start + horizon), in time order (UTC)."""
    end = start + horizon
    out: list[tuple[datetime, datetime]] = []
    for w in windows:
        tz = ZoneInfo(w.timezone)
        first: date = start.astimezone(tz).date() - timedelta(days=1)
        days = int(horizon.total_seconds() // 86400) + 3
        for d in range(days):
            day = first + timedelta(days=d)
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
    windows: list[OffPeakWindow], now: datetime, latest_start: datetime
) -> datetime | None:
    """Earliest instant in a window, at or after ``now`` and no later than ``latest_start``."""
    if latest_start < now:
        return None
    for s, _e in window_intervals(windows, now, latest_start - now + timedelta(seconds=1)):
        if s <= latest_start:
            return s
    return None
