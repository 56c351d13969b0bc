"""Timing core: off-peak windows across timezones/DST, never past the latest safe start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gensched.api import SchedulingPolicySpec
from gensched.timing import decide_start

NIGHT = SchedulingPolicySpec.model_validate({"timing": {
    "mode": "OffPeak", "maxDeferral": "24h", "safetyMargin": "30m",
    "offPeakWindows": [{"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "22:00", "end": "06:00",
                        "timezone": "Europe/Berlin"}]}}).timing


def test_defers_to_the_next_window_in_local_time_across_dst() -> None:
    winter = decide_start(datetime(2026, 1, 13, 9, tzinfo=UTC), NIGHT, None, timedelta(hours=1))
    summer = decide_start(datetime(2026, 7, 14, 9, tzinfo=UTC), NIGHT, None, timedelta(hours=1))
    assert winter.deferred and winter.start == datetime(2026, 1, 13, 21, tzinfo=UTC)  # CET = UTC+1
    assert summer.deferred and summer.start == datetime(2026, 7, 14, 20, tzinfo=UTC)  # CEST = UTC+2


def test_runs_now_inside_a_window_or_without_slack() -> None:
    inside = decide_start(datetime(2026, 1, 13, 23, tzinfo=UTC), NIGHT, None, None)
    assert not inside.deferred and "inside" in inside.reason
    now = datetime(2026, 1, 13, 9, tzinfo=UTC)
    late = decide_start(now, NIGHT, now + timedelta(hours=1), timedelta(hours=2))
    assert not late.deferred and late.warning and "batch.deadline" in late.warning


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)),
       st.integers(0, 72 * 60), st.integers(1, 12 * 60))
def test_never_planned_past_the_latest_safe_start(now: datetime, deadline_min: int, est_min: int) -> None:
    deadline, est = now + timedelta(minutes=deadline_min), timedelta(minutes=est_min)
    d = decide_start(now, NIGHT, deadline, est)
    assert d.start >= now
    if d.deferred:
        assert d.start + est + timedelta(minutes=30) <= deadline
        assert d.start <= now + timedelta(hours=24)
