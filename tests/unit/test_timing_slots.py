"""Timing core arithmetic: series, slot choice, capacity ledger, forecasts that never see the future."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gensched.sim import timing_sim as ts
from gensched.timing.forecast import SeasonalForecaster, denoise, evaluate_forecaster, mape
from gensched.timing.series import Series
from gensched.timing.slots import CapacityLedger, best_start, cheapest_slots
from gensched.timing.sources.csv_file import SignalError, load_csv

T0 = datetime(2020, 1, 6, tzinfo=UTC)  # a Monday
HALF = timedelta(minutes=30)

costs = st.lists(st.integers(0, 50).map(float), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(costs, st.integers(1, 4), st.data())
def test_best_start_is_the_cheapest_feasible_window(cost: list[float], n: int, data: st.DataObject) -> None:
    end = data.draw(st.integers(0, len(cost)))
    usable = np.array(data.draw(st.lists(st.booleans(), min_size=len(cost), max_size=len(cost))))
    got = best_start(np.array(cost), n, end, usable)
    options = [s for s in range(0, end - n + 1) if usable[s:s + n].all()]
    if not options:
        assert got is None
        return
    best = min(sum(cost[s:s + n]) for s in options)
    assert got in options and sum(cost[got:got + n]) == best
    assert got == min(s for s in options if sum(cost[s:s + n]) == best)  # ties: earliest


@settings(max_examples=200, deadline=None)
@given(costs, st.integers(1, 4), st.data())
def test_cheapest_slots_is_the_cheapest_set(cost: list[float], n: int, data: st.DataObject) -> None:
    end = data.draw(st.integers(0, len(cost)))
    usable = np.array(data.draw(st.lists(st.booleans(), min_size=len(cost), max_size=len(cost))))
    got = cheapest_slots(np.array(cost), n, end, usable)
    allowed = [i for i in range(end) if usable[i]]
    if len(allowed) < n:
        assert got is None
        return
    assert got is not None and len(set(got.tolist())) == n and all(usable[i] and i < end for i in got)
    assert sum(cost[i] for i in got) == min(sum(cost[i] for i in c) for c in combinations(allowed, n))


def test_capacity_ledger_refuses_over_commit() -> None:
    ledger = CapacityLedger.flat(2, 4)
    ledger.reserve(np.array([0, 1]), 2)
    assert ledger.usable(0, 4, 1).tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="over-committed"):
        ledger.reserve(np.array([1]), 1)
    ledger.release(np.array([0, 1]), 2)
    assert ledger.free.tolist() == [2, 2, 2, 2]


def test_series_indexing_slicing_and_resampling() -> None:
    s = Series(T0, timedelta(minutes=15), np.arange(8.0))
    assert s.index_at(T0 + timedelta(minutes=29)) == 1 and s.value_at(T0 + timedelta(minutes=30)) == 2.0
    assert s.resample(HALF).values.tolist() == [0.0, 2.0, 4.0, 6.0]  # sampled at :00 and :30
    assert s.resample(HALF, how="mean").values.tolist() == [0.5, 2.5, 4.5, 6.5]
    assert s.slice(T0 + timedelta(minutes=20), T0 + timedelta(minutes=50)).values.tolist() == [1.0, 2.0, 3.0]
    assert len(s.until(T0 + timedelta(minutes=30))) == 2
    with pytest.raises(KeyError, match="outside the series"):
        s.value_at(T0 - timedelta(minutes=1))


def test_denoise_keeps_length_and_averages_neighbours() -> None:
    assert denoise(np.array([1.0, 2.0, 3.0, 10.0]), 3).tolist() == [1.5, 2.0, 5.0, 6.5]
    assert denoise(np.array([5.0]), 3).tolist() == [5.0]


def _daily(days: int, weekend_bump: float = 0.0) -> Series:
    t = np.arange(days * 48)
    vals = 200 + 80 * np.sin(2 * np.pi * t / 48)
    weekday = (T0.weekday() + t // 48) % 7
    return Series(T0, HALF, vals + np.where(weekday >= 5, weekend_bump, 0.0))


def test_seasonal_forecaster_learns_a_daily_and_weekly_shape() -> None:
    daily = _daily(42)
    fc = SeasonalForecaster().forecast(daily.until(daily.start + timedelta(days=33, hours=5)), 96)
    assert mape(daily.since(fc.start).values[:96], fc.values) < 1.0
    assert evaluate_forecaster(daily, SeasonalForecaster(), timedelta(hours=24)) < 1.0
    weekly = _daily(42, weekend_bump=-60)
    fc = SeasonalForecaster().forecast(weekly.until(weekly.start + timedelta(days=32)), 96)  # Fri, Sat
    assert fc.values[48:].mean() < fc.values[:48].mean() - 30  # past weekends pull Saturday down


def test_history_forecast_in_the_simulator_never_reads_the_future() -> None:
    truth = _daily(30)
    f = ts.forecaster_for("history", truth, 0.0, 0)
    i = 20 * 48
    before = f(i, 96).copy()
    changed = Series(truth.start, truth.step, truth.values.copy())
    changed.values[i + 1:] += 500  # rewrite the future
    assert np.array_equal(ts.forecaster_for("history", changed, 0.0, 0)(i, 96), before)
    assert before[0] == truth.values[i]  # the current slot is observed, the rest forecast


def test_noisy_oracle_noise_has_the_papers_scale() -> None:
    truth = _daily(60)
    f = ts.forecaster_for("noisy-oracle", truth, 0.05, seed=1)
    noise = f(0, len(truth)) - truth.values
    assert abs(noise.std() / truth.values.mean() - 0.05) < 0.005
    assert np.array_equal(f(0, 10), ts.forecaster_for("noisy-oracle", truth, 0.05, seed=1)(0, 10))


@pytest.mark.parametrize(("finish", "deadline"), [
    (datetime(2020, 3, 7, 12), datetime(2020, 3, 9, 9)),    # Saturday -> Monday 09:00
    (datetime(2020, 3, 8, 12), datetime(2020, 3, 9, 9)),    # Sunday -> next day 09:00
    (datetime(2020, 3, 4, 17, 30), datetime(2020, 3, 5, 9)),  # after 17:00 -> next day 09:00
    (datetime(2020, 3, 4, 17, 0), datetime(2020, 3, 4, 17, 0)),  # 17:00 sharp: no slack
    (datetime(2020, 3, 4, 7, 0), datetime(2020, 3, 4, 9, 0)),  # before 09:00 -> 09:00
    (datetime(2020, 3, 4, 11, 0), datetime(2020, 3, 4, 11, 0)),  # working hours: no slack
])
def test_next_workday_deadline_rule(finish: datetime, deadline: datetime) -> None:
    assert ts.next_workday_deadline(finish) == deadline


def test_ml_jobs_follow_the_protocol() -> None:
    truth = Series(datetime(2019, 12, 20, tzinfo=UTC), HALF, np.ones(48 * 400))
    jobs = ts.ml_jobs(truth)
    assert len(jobs) == 3387
    for j in jobs:
        t = truth.time_at(j.arrival)
        assert t.year == 2020 and t.weekday() < 5 and 9 <= t.hour + t.minute / 60 <= 16.5
        assert 8 <= j.duration <= 179 and j.deadline >= j.arrival + j.duration


def test_shifting_saves_and_never_misses_on_a_daily_cycle() -> None:
    truth = Series(datetime(2019, 12, 20, tzinfo=UTC), HALF, 200 + 100 * np.sin(np.arange(48 * 400) * 2 * np.pi / 48))
    jobs = ts.ml_jobs(truth, n=300)
    perfect = ts.forecaster_for("perfect", truth, 0.0, 0)
    non = ts.run_ml(truth, jobs, perfect, interruptible=False)
    inter = ts.run_ml(truth, jobs, perfect, interruptible=True)
    replanned = ts.run_ml(truth, jobs, ts.forecaster_for("history", truth, 0.0, 0), interruptible=True, replan=True)
    capped = ts.run_ml(truth, jobs, perfect, interruptible=True, capacity=25)
    assert 0 < non.saving_pct < inter.saving_pct
    assert replanned.saving_pct > 0.8 * inter.saving_pct  # a clean daily cycle is easy to forecast
    assert non.missed_deadlines == inter.missed_deadlines == replanned.missed_deadlines == 0
    used = np.zeros(len(truth) + 1)
    for slots, job in zip(capped.chosen, jobs, strict=True):
        assert len(slots) == job.duration
        used[slots] += job.gpus
    assert used.max() <= 25  # the ledger held


def test_nightly_window_zero_changes_nothing() -> None:
    truth = _daily(400)
    r = ts.run_nightly(Series(datetime(2019, 12, 20, tzinfo=UTC), HALF, truth.values), 0,
                       ts.forecaster_for("perfect", truth, 0.0, 0))
    assert r.saving_pct == pytest.approx(0.0)


def test_csv_formats_gaps_and_errors(tmp_path: Path) -> None:
    lwa = tmp_path / "x.csv"
    lwa.write_text("Time,Carbon Intensity\n2020-01-01 00:00:00,100\n2020-01-01 00:30:00,110\n"
                   "2020-01-01 01:30:00,130\n")
    s = load_csv(lwa)
    assert s.step == HALF and s.values.tolist() == [100.0, 110.0, 110.0, 130.0]  # gap forward-filled
    em = tmp_path / "em.csv"
    em.write_text("Datetime (UTC),Country,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA)\n"
                  "2023-01-01 00:00:00,USA,200,280\n2023-01-01 01:00:00,USA,210,290\n")
    e = load_csv(em)
    assert e.step == timedelta(hours=1) and e.values.tolist() == [280.0, 290.0]  # LCA preferred
    bad = tmp_path / "bad.csv"
    bad.write_text("when,value\n1,2\n")
    with pytest.raises(SignalError, match="unknown CSV format"):
        load_csv(bad)
    with pytest.raises(SignalError, match="csvPath"):
        load_csv(tmp_path / "missing.csv")
