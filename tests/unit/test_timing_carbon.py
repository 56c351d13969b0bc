"""CarbonAware planning: cheapest window, deadline never missed, fallbacks, prices, holidays, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gensched.api import SchedulingPolicySpec
from gensched.timing import decide_start
from gensched.timing.energy import job_power_kw, tdp_watts
from gensched.timing.series import Series

NOW = datetime(2026, 3, 2, 10, 7, tzinfo=UTC)
HALF = timedelta(minutes=30)


def timing(**extra: object):
    spec = {"mode": "CarbonAware", "maxDeferral": "48h", "safetyMargin": "30m", "smoothingSlots": 1,
            "carbon": {"provider": "CSV", "csvPath": "/dev/null"}, **extra}
    return SchedulingPolicySpec.model_validate({"timing": spec}).timing


def series(values: list[float]) -> Series:
    return Series(NOW.replace(minute=0), HALF, np.array(values, dtype=float))


def test_defers_to_the_cheapest_window_and_reports_the_saving() -> None:
    fc = series([300, 300, 300, 300, 100, 100, 100, 300, 300, 300])
    d = decide_start(NOW, timing(), NOW + timedelta(hours=5), timedelta(hours=1), fc)
    assert d.deferred and d.start == NOW.replace(minute=0) + 4 * HALF
    assert d.expected_intensity == 100 and d.now_intensity == 300 and d.saving_pct == pytest.approx(66.67, 0.01)
    assert d.slots == ((d.start, d.start + timedelta(hours=1)),)


def test_interruptible_takes_the_cheapest_slots_in_pieces() -> None:
    fc = series([100, 300, 100, 300, 100, 300, 300, 300])
    d = decide_start(NOW, timing(), NOW + timedelta(hours=4), timedelta(hours=1, minutes=30), fc, interruptible=True)
    assert not d.deferred and d.start == NOW  # slot 0 is among the cheapest: start now
    assert [s for s, _ in d.slots][1:] == [NOW.replace(minute=0) + 2 * HALF, NOW.replace(minute=0) + 4 * HALF]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(10, 900), min_size=4, max_size=60), st.integers(1, 10), st.integers(0, 40),
       st.booleans())
def test_never_plans_past_the_deadline(values: list[float], run_slots: int, slack_slots: int, inter: bool) -> None:
    run = HALF * run_slots
    deadline = NOW + run + HALF + HALF * slack_slots  # margin 30m
    d = decide_start(NOW, timing(), deadline, run, series(values), interruptible=inter)
    assert d.start >= NOW
    if d.slots:
        assert max(e for _, e in d.slots) <= deadline - HALF + timedelta(seconds=1)
        covered = sum(((e - s) for s, e in d.slots), timedelta())
        assert covered >= run - HALF  # the first slot may be partial (starts now)
    if d.deferred:
        assert d.start + run <= deadline - HALF


def test_no_slack_runs_now_with_a_warning() -> None:
    d = decide_start(NOW, timing(), NOW + timedelta(minutes=40), timedelta(hours=1), series([500] * 10))
    assert not d.deferred and d.warning and "batch.deadline" in d.warning


def test_missing_signal_falls_back_to_windows_then_now() -> None:
    windows = [{"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "22:00", "end": "06:00"}]
    d = decide_start(NOW, timing(offPeakWindows=windows), None, timedelta(hours=1), None, degraded="HTTP 500")
    assert d.deferred and d.start == NOW.replace(hour=22, minute=0) and "HTTP 500" in (d.warning or "")
    d = decide_start(NOW, timing(), None, timedelta(hours=1), None, degraded="HTTP 500")
    assert not d.deferred and "starting now" in (d.warning or "")


def test_cost_objective_follows_window_prices() -> None:
    windows = [{"start": "12:00", "end": "14:00", "pricePerKwh": 0.1}]
    fc = series([100] * 20)
    d = decide_start(NOW, timing(objective="Cost", offPeakWindows=windows, defaultPricePerKwh=0.4), None,
                     timedelta(hours=1), fc)
    assert d.start == NOW.replace(hour=12, minute=0)


def test_holidays_are_off_peak_all_day() -> None:
    windows = [{"days": ["Sat"], "start": "00:00", "end": "06:00"}]
    spec = SchedulingPolicySpec.model_validate({"timing": {"mode": "OffPeak", "offPeakWindows": windows,
                                                           "holidays": ["2026-03-02"], "maxDeferral": "2h"}}).timing
    d = decide_start(NOW, spec, None, timedelta(hours=1))
    assert not d.deferred and "inside" in d.reason


@pytest.mark.parametrize(("timing_spec", "message"), [
    ({"mode": "CarbonAware"}, "timing.carbon is missing"),
    ({"mode": "OffPeak", "offPeakWindows": [{"start": "22:00", "end": "06:00"}, {"start": "23:00", "end": "01:00"}]},
     "overlap"),
    ({"mode": "OffPeak", "offPeakWindows": [{"start": "22:00", "end": "22:00"}]}, "empty"),
    ({"mode": "OffPeak", "offPeakWindows": [{"start": "22:00", "end": "06:00", "timezone": "Mars/Olympus"}]},
     "unknown timezone"),
    ({"holidays": ["25/12/2026"]}, "YYYY-MM-DD"),
    ({"mode": "CarbonAware", "carbon": {"provider": "CSV"}}, "csvPath"),
])
def test_bad_timing_input_names_the_field(timing_spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchedulingPolicySpec.model_validate({"timing": timing_spec})


def test_power_model_uses_published_board_power() -> None:
    assert tdp_watts("NVIDIA-A100-SXM4-80GB") == 400 and tdp_watts("NVIDIA-H100-PCIe") == 350
    assert tdp_watts("Tesla-T4") == 70 and tdp_watts(None) == 300
    assert job_power_kw(0.5, "NVIDIA-H100-80GB-HBM3", 0.8) == pytest.approx(0.28)
