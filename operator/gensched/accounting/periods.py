"""Accounting periods: fixed, UTC-aligned windows that budgets are counted over.

A period is a duration (``24h``, ``7d``, ``30d``) or ``Month`` (calendar months, UTC). Duration
periods are aligned to Monday 1970-01-05 00:00 UTC, so ``24h`` periods are UTC days and ``7d``
periods are weeks starting on Monday; usage moves into a fresh period at its boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from gensched.api.durations import parse_duration
from gensched.timing.series import as_utc

MONTH = "Month"
ANCHOR = datetime(1970, 1, 5, tzinfo=UTC)  # a Monday


def _length(period: str) -> timedelta:
    length = parse_duration(period)
    if length <= timedelta(0):
        raise ValueError(f"period {period!r} must be longer than zero")
    return length


def period_start(t: datetime, period: str) -> datetime:
    """Start of the period containing ``t``."""
    t = as_utc(t)
    if period == MONTH:
        return datetime(t.year, t.month, 1, tzinfo=UTC)
    length = _length(period)
    return ANCHOR + length * ((t - ANCHOR) // length)


def period_end(t: datetime, period: str) -> datetime:
    """End (exclusive) of the period containing ``t``."""
    start = period_start(t, period)
    if period == MONTH:
        return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return start + _length(period)


def split_by_period(t0: datetime, t1: datetime, period: str) -> Iterator[tuple[datetime, datetime]]:
    """``[t0, t1)`` cut at period boundaries."""
    a, t1 = as_utc(t0), as_utc(t1)
    while a < t1:
        b = min(t1, period_end(a, period))
        yield a, b
        a = b


def valid_period(period: str) -> str:
    """The period if it is one; a ValueError that says the accepted forms otherwise."""
    if period == MONTH:
        return period
    try:
        _length(period)
    except ValueError as exc:
        raise ValueError(f"period {period!r}: use a duration such as '24h' or '7d', or 'Month'") from exc
    return period
