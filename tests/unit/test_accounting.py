"""Accounting (pure): usage from samples, energy sources, carbon and cost, budgets, periods, the breaker."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gensched.accounting import (
    BreakerReason,
    BudgetState,
    Ledger,
    Limits,
    Prices,
    Sample,
    ServeSample,
    Usage,
    advance,
    circuit_breaker,
    evaluate,
    finalize,
    latch,
    merge,
    merge_periods,
    namespace_usage,
    period_end,
    period_start,
    replay,
    retire,
    seconds_to_exhaustion,
    to_status,
    yield_of,
)
from gensched.accounting.dcgm import job_queries
from gensched.api.accounting import AccountingLedger, AccountingStatus
from gensched.timing.energy import tdp_watts
from gensched.timing.series import Series

T0 = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # a Monday
A100 = "NVIDIA-A100-SXM4-80GB"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# -- usage ----------------------------------------------------------------------------------------
def test_gpu_hours_energy_carbon_and_cost_of_a_modelled_run() -> None:
    carbon = Series(T0, timedelta(minutes=30), np.array([100.0, 300.0]))
    prices = Prices(per_gpu_hour={"A100": 2.0, "H100": 4.0}, carbon_intensity=carbon, utilization=0.5,
                    electricity_per_kwh=0.25)
    led = replay([Sample(at(m), gpus=2, gpu_model=A100) for m in range(0, 61, 10)], prices)
    u = led.total
    assert u.gpu_hours == pytest.approx(2.0)
    watts = 2 * tdp_watts(A100) * 0.5  # 400 W
    assert u.kwh == pytest.approx(watts / 1000) and u.modelled_joules > 0 and u.measured_joules == 0
    assert u.gco2 == pytest.approx(0.2 * 100 + 0.2 * 300)  # half the energy in each slot
    assert u.gpu_cost == pytest.approx(4.0) and u.energy_cost == pytest.approx(0.4 * 0.25)
    assert u.cost == pytest.approx(4.1) and u.unpriced_gpu_seconds == 0 and u.uncarboned_joules == 0


def test_measured_counter_then_power_then_model_in_that_order() -> None:
    prices = Prices(utilization=0.5)
    samples = [
        Sample(at(0), gpus=1, gpu_model=A100, energy_joules=1_000_000, power_watts=999),
        Sample(at(10), gpus=1, gpu_model=A100, energy_joules=1_120_000, power_watts=150),  # counter: 120 kJ
        Sample(at(20), gpus=1, gpu_model=A100),  # no counter at the end: power of the start, 150 W
        Sample(at(30), gpus=1, gpu_model=A100),  # nothing measured: model, 400 W x 0.5
    ]
    led = replay(samples, prices)
    ledger = replay(samples[:3], prices)
    assert ledger.total.measured_joules == pytest.approx(120_000 + 150 * 600)
    assert led.total.modelled_joules == pytest.approx(200 * 600)
    assert to_status(led, prices, "USD")["energySource"] == "Mixed"
    assert to_status(ledger, prices, "USD")["energySource"] == "Measured"


def test_energy_counter_going_backwards_or_jumping_is_a_reset_with_fallback() -> None:
    prices = Prices(utilization=0.5)
    samples = [Sample(at(0), gpus=1, gpu_model=A100, energy_joules=5e6, power_watts=300),
               Sample(at(10), gpus=1, gpu_model=A100, energy_joules=1e3, power_watts=300),  # GPU restarted
               Sample(at(20), gpus=1, gpu_model=A100, energy_joules=1e3 + 180_000),  # counting resumes
               Sample(at(30), gpus=1, gpu_model=A100, energy_joules=9e12)]  # pod moved: impossible jump
    led = replay(samples, prices)
    assert led.energy_resets == 2
    # interval 1: power 300 W x 600 s; interval 2: counter 180 kJ; interval 3: no power, model 200 W x 600 s
    assert led.total.measured_joules == pytest.approx(180_000 + 180_000)
    assert led.total.modelled_joules == pytest.approx(120_000)
    assert any("reset" in n for n in to_status(led, prices, "USD")["notes"])


def test_output_counter_resets_and_gaps_never_count_twice() -> None:
    prices = Prices()
    samples = [Sample(at(0), gpus=1, outputs=10), Sample(at(1), gpus=1, outputs=50),
               Sample(at(2), gpus=1), Sample(at(3), gpus=1, outputs=70),  # gap: carried forward, not recounted
               Sample(at(4), gpus=1, outputs=5),  # workload restarted from zero
               Sample(at(5), gpus=1, outputs=25)]
    led = replay(samples, prices)
    assert led.total.outputs == pytest.approx(10 + 40 + 20 + 5 + 20) and led.output_resets == 1


def test_prices_missing_for_a_gpu_model_and_no_carbon_signal_are_reported() -> None:
    carbon = Series(T0, timedelta(minutes=30), np.array([200.0]))  # covers 22:00-22:30 (+1h extrapolated)
    prices = Prices(per_gpu_hour={"H100": 4.0}, carbon_intensity=carbon)
    led = replay([Sample(at(m), gpus=1, gpu_model="NVIDIA-L4") for m in (0, 60, 180)], prices)
    u = led.total
    assert u.gpu_cost == 0 and u.unpriced_gpu_seconds == pytest.approx(3 * 3600)
    assert u.uncarboned_joules == pytest.approx(u.joules * 1.5 / 3)  # 23:30-01:00 has no intensity
    notes = " ".join(to_status(led, prices, "EUR")["notes"])
    assert "without a price" in notes and "NVIDIA-L4" in notes and "no carbon intensity" in notes
    assert Prices(default_per_gpu_hour=1.0).gpu_hour_price("NVIDIA-L4") == 1.0
    assert Prices(per_gpu_hour={"A100": 2, "A100-PCIE": 3}).gpu_hour_price("NVIDIA-A100-SXM4-80GB") == 2
    assert Prices(per_gpu_hour={"A100": 2, "A100-SXM4": 3}).gpu_hour_price("NVIDIA-A100-SXM4-80GB") == 3


def test_electricity_price_as_a_function_of_time() -> None:
    def price(t: datetime) -> float:
        return 0.1 if t.hour >= 23 or t.hour < 6 else 0.4

    prices = Prices(electricity_per_kwh=price, utilization=1.0)
    led = replay([Sample(at(0), gpus=1, gpu_model="T4"), Sample(at(120), gpus=1, gpu_model="T4")], prices)
    kwh = 70 * 2 / 1000
    assert led.total.energy_cost == pytest.approx(kwh / 2 * 0.4 + kwh / 2 * 0.1)


def test_derived_yield() -> None:
    y = yield_of(Usage(gpu_seconds=7200, modelled_joules=3.6e6 * 2, gpu_cost=10, outputs=100))
    assert (y.cost_per_output, y.gpu_seconds_per_output, y.outputs_per_kwh) == (0.1, 72, 50)
    assert yield_of(Usage()).cost_per_output is None and yield_of(Usage()).outputs_per_kwh is None


def test_status_and_ledger_round_trip_through_the_api_models() -> None:
    prices = Prices(per_gpu_hour={"A100": 2.0}, carbon_intensity=250.0, periods=("24h", "Month"))
    led = finalize(replay([Sample(at(m), gpus=0.5, gpu_model=A100, outputs=m * 3, power_watts=120)
                           for m in range(0, 180, 15)], prices))
    verdict = evaluate(led.total, Limits(gpu_hours=10))
    status = to_status(led, prices, "EUR", "items", verdict)
    wire = AccountingStatus.model_validate(json.loads(json.dumps(status))).to_wire()
    assert wire["gCO2"] == status["gCO2"] and wire["budget"]["state"] == "Ok" and wire["final"] is True
    assert wire["energySource"] == "Measured" and wire["currency"] == "EUR" and wire["costPerOutput"] > 0
    AccountingLedger.model_validate(status["ledger"])
    assert Ledger.from_dict(json.loads(json.dumps(led.to_dict()))) == led
    assert advance(led, Sample(at(500), gpus=8), prices) == led  # final: nothing more is added


def test_a_restart_from_a_stored_record_continues_without_double_counting() -> None:
    prices = Prices(per_gpu_hour={"A100": 2.0})
    samples = [Sample(at(m), gpus=1, gpu_model=A100, outputs=m) for m in range(0, 121, 10)]
    straight = replay(samples, prices)
    stored = json.loads(json.dumps(replay(samples[:6], prices).to_dict()))
    resumed = replay(samples[4:], prices, Ledger.from_dict(stored))  # re-sent samples are ignored
    for name in ("gpu_seconds", "gpu_cost", "modelled_joules", "outputs"):
        assert getattr(resumed.total, name) == pytest.approx(getattr(straight.total, name)), name
    assert Ledger.from_dict({"total": {"gpuSeconds": "garbage"}, "cursor": {"t": "nope"}}) == Ledger()


samples_st = st.lists(
    st.builds(
        Sample,
        t=st.integers(0, 2000).map(lambda m: at(m)),
        gpus=st.one_of(st.floats(-2, 8), st.just(math.nan)),
        gpu_model=st.sampled_from([None, A100, "NVIDIA-H100-80GB-HBM3", "weird"]),
        energy_joules=st.one_of(st.none(), st.floats(-1e6, 1e9), st.just(math.inf)),
        power_watts=st.one_of(st.none(), st.floats(-10, 3000)),
        utilization=st.one_of(st.none(), st.floats(-1, 2)),
        outputs=st.one_of(st.none(), st.floats(-5, 1e6)),
    ),
    max_size=25,
)
prices_st = st.builds(
    Prices,
    per_gpu_hour=st.just({"A100": 2.0}),
    carbon_intensity=st.sampled_from([None, 300.0, Series(T0, timedelta(hours=1), np.array([100.0, np.nan, 400.0]))]),
    electricity_per_kwh=st.sampled_from([None, 0.2]),
    periods=st.sampled_from([(), ("24h",), ("24h", "Month", "7d")]),
)


@settings(max_examples=150, deadline=None)
@given(samples_st, prices_st)
def test_accounting_never_decreases_what_it_recorded(samples: list[Sample], prices: Prices) -> None:
    led = Ledger()
    for s in samples:  # in the given (unsorted) order: late samples are ignored, never subtracted
        nxt = advance(led, s, prices)
        assert nxt.total.covers(led.total)
        assert all(math.isfinite(getattr(nxt.total, f.name)) and getattr(nxt.total, f.name) >= 0
                   for f in fields(Usage))
        led = nxt
    for b in led.buckets:
        assert led.total.gpu_seconds + 1e-6 >= b.usage.gpu_seconds
    assert Ledger.from_dict(json.loads(json.dumps(led.to_dict()))) == led


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 600), st.floats(0, 8)), min_size=1, max_size=30))
def test_gpu_seconds_are_exactly_gpus_held_times_time(steps: list[tuple[int, float]]) -> None:
    t, samples, expect = 0, [], 0.0
    for dt, g in steps:
        samples.append(Sample(at(t / 60), gpus=g))
        t += dt
        expect += g * dt
    samples.append(Sample(at(t / 60)))
    assert replay(samples, Prices()).total.gpu_seconds == pytest.approx(expect)


def _ledgers() -> st.SearchStrategy[Ledger]:
    return st.builds(lambda ss, ps: replay(ss, Prices(periods=ps)), samples_st,
                     st.sampled_from([(), ("24h",), ("1h", "Month")]))


@settings(max_examples=100, deadline=None)
@given(_ledgers(), _ledgers(), _ledgers())
def test_merge_never_loses_usage_and_is_a_join(a: Ledger, b: Ledger, c: Ledger) -> None:
    ab = merge(a, b)
    assert ab.total.covers(a.total) and ab.total.covers(b.total)
    assert ab == merge(b, a) and merge(a, a) == a
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


# -- periods and budgets --------------------------------------------------------------------------
def test_periods_are_utc_aligned() -> None:
    t = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)  # a Wednesday
    assert period_start(t, "24h") == datetime(2026, 3, 4, tzinfo=UTC)
    assert period_start(t, "7d") == datetime(2026, 3, 2, tzinfo=UTC)  # Monday
    assert period_start(t, "Month") == datetime(2026, 3, 1, tzinfo=UTC)
    assert period_end(datetime(2026, 12, 31, tzinfo=UTC), "Month") == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="duration"):
        period_start(t, "fortnight")


def test_usage_moves_into_a_fresh_period_at_the_boundary() -> None:
    prices = Prices(periods=("24h",))
    led = replay([Sample(at(0), gpus=1), Sample(at(240), gpus=1)], prices)  # 22:00 -> 02:00
    assert led.total.gpu_hours == pytest.approx(4)
    assert led.bucket("24h", at(240)).gpu_hours == pytest.approx(2)  # only the part after midnight
    assert led.bucket("24h", at(0)).gpu_hours == 0  # the old period is not kept


def test_namespace_usage_counts_live_and_deleted_jobs_once() -> None:
    prices = Prices(periods=("24h",))
    now = at(240)
    a = replay([Sample(at(120), gpus=1), Sample(now, gpus=1)], prices)  # 2 h on the day
    b = replay([Sample(at(180), gpus=2), Sample(now, gpus=2)], prices)  # 2 h x 2 on the day
    rec = retire(None, "ml", "24h", now, "uid-b", b)
    rec = retire(rec, "ml", "24h", now, "uid-b", b)  # twice: counted once
    usage = namespace_usage([("ml", a), ("web", a)], "24h", now, [rec])
    assert usage["ml"].gpu_hours == pytest.approx(2 + 2) and usage["web"].gpu_hours == pytest.approx(2)
    stored = type(rec).from_dict(json.loads(json.dumps(rec.to_dict())))
    assert merge_periods(stored, rec) == rec
    tomorrow = now + timedelta(days=1)
    assert namespace_usage([], "24h", tomorrow, [rec]) == {}


limits_st = st.builds(Limits, gpu_hours=st.one_of(st.none(), st.floats(0.01, 100)),
                      cost=st.one_of(st.none(), st.floats(0.01, 100)), gco2=st.one_of(st.none(), st.floats(0.01, 1e4)),
                      warn_at=st.floats(0.05, 1))
usage_st = st.builds(Usage, gpu_seconds=st.floats(0, 1e6), gpu_cost=st.floats(0, 200), gco2=st.floats(0, 2e4))


@settings(max_examples=300, deadline=None)
@given(usage_st, limits_st)
def test_budget_exhausted_iff_used_reaches_a_limit(used: Usage, limits: Limits) -> None:
    v = evaluate(used, limits)
    amounts = {"maxGpuHours": used.gpu_hours, "maxCost": used.cost, "maxGCO2": used.gco2}
    reached = [k for k, lim in limits.items() if amounts[k] >= lim]
    warned = [k for k, lim in limits.items() if amounts[k] >= limits.warn_at * lim]
    assert (v.state == BudgetState.EXHAUSTED) == bool(reached)
    assert (v.state == BudgetState.WARNING) == (not reached and bool(warned))
    assert v.used_ratio == pytest.approx(max((amounts[k] / lim for k, lim in limits.items()), default=0.0))


def test_budget_messages_name_the_limit_and_refuse_non_positive_limits() -> None:
    v = evaluate(Usage(gpu_seconds=3600 * 9), Limits(gpu_hours=10, cost=100))
    assert v.state == BudgetState.WARNING and v.binding == "maxGpuHours" and "9 of 10 GPU-hours" in v.message
    v = evaluate(Usage(gpu_cost=100), Limits(gpu_hours=10, cost=100))
    assert v.state == BudgetState.EXHAUSTED and "raise maxCost" in v.message
    for bad in ({"gpu_hours": 0}, {"cost": -1}, {"gco2": math.nan}):
        with pytest.raises(ValueError, match="above zero"):
            Limits(**bad)  # type: ignore[arg-type]
    assert seconds_to_exhaustion(Usage(gpu_seconds=3600), Limits(gpu_hours=2), Usage(gpu_seconds=2)) == 1800
    assert seconds_to_exhaustion(Usage(), Limits(gpu_hours=2), Usage()) is None


# -- circuit breaker ------------------------------------------------------------------------------
def serve(gpus: list[float], rps: list[float], step_s: int = 60) -> list[ServeSample]:
    out, served = [], 0.0
    for i, (g, r) in enumerate(zip(gpus, rps, strict=True)):
        out.append(ServeSample(T0 + timedelta(seconds=i * step_s), g, served))
        served += r * step_s
    return out


def test_breaker_opens_when_spend_outpaces_requests() -> None:
    # 1 -> 4 GPUs while traffic grows only 1.5x: GPU-seconds per request x2.67
    v = circuit_breaker(serve([1] * 30 + [4] * 31, [10] * 30 + [15] * 31), 2.0, timedelta(hours=1))
    assert v.open and v.reason == BreakerReason.SPEND_OUTPACED_OUTPUT and v.spend_growth == pytest.approx(4, rel=0.1)
    # the same scale-up with 4x traffic is healthy
    v = circuit_breaker(serve([1] * 30 + [4] * 31, [10] * 30 + [40] * 31), 2.0, timedelta(hours=1))
    assert not v.open and v.reason == BreakerReason.STEADY
    # traffic falls at night while spend stays: not a runaway (spend did not rise)
    assert not circuit_breaker(serve([2] * 61, [10] * 30 + [0] * 31), 2.0, timedelta(hours=1)).open
    # spend up 3x with nothing served at all
    assert circuit_breaker(serve([1] * 30 + [3] * 31, [0] * 61), 2.0, timedelta(hours=1), min_requests=1).open


def test_breaker_budget_rate_and_too_little_data() -> None:
    s = serve([2] * 61, [10] * 61)
    v = circuit_breaker(s, 2.0, timedelta(hours=1), budget_gpu_seconds_left=3600, period_seconds_left=7200)
    assert v.open and v.reason == BreakerReason.BUDGET_RATE  # 2 GPUs x 2 h = 4 GPU-h > 1 left
    assert not circuit_breaker(s, 2.0, timedelta(hours=1), budget_gpu_seconds_left=20 * 3600,
                               period_seconds_left=7200).open
    short = circuit_breaker(s[:5], 2.0, timedelta(hours=1))
    assert not short.open and short.reason == BreakerReason.INSUFFICIENT_DATA
    after_reset = circuit_breaker(serve([1] * 30 + [4] * 31, [10] * 30 + [15] * 31), 2.0, timedelta(hours=1),
                                  since=T0 + timedelta(minutes=45))
    assert after_reset.reason == BreakerReason.INSUFFICIENT_DATA  # only samples after the reset count
    assert latch(False, v, reset=False) and latch(True, short, reset=False) and not latch(True, v, reset=True)
    with pytest.raises(ValueError, match="above 1"):
        circuit_breaker(s, 1.0, timedelta(hours=1))
    restarted = s[:30] + [ServeSample(x.t, x.gpus, x.requests - s[30].requests) for x in s[30:]]
    v = circuit_breaker(restarted, 2.0, timedelta(hours=1))  # the requests counter restarted from zero
    assert not v.open and v.output_growth == pytest.approx(1.0, rel=0.05)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 16), st.floats(0, 100)), min_size=0, max_size=40),
       st.floats(1.01, 10), st.booleans())
def test_breaker_never_raises_and_a_reset_counter_is_not_a_collapse(pts: list[tuple[float, float]], factor: float,
                                                                    reset: bool) -> None:
    s = serve([g for g, _ in pts], [r for _, r in pts])
    if reset and len(s) > 3:  # the requests counter restarts from zero mid-window
        k = len(s) // 2
        base = s[k].requests
        s = s[:k] + [ServeSample(x.t, x.gpus, x.requests - base) for x in s[k:]]
    v = circuit_breaker(s, factor, timedelta(minutes=30))
    assert isinstance(v.open, bool) and v.message
    if v.open:
        assert v.spend_growth is not None and v.spend_growth > 1


def test_dcgm_queries_select_the_jobs_pods() -> None:
    q = job_queries("ml", ["job-a-0", "job.b"], pod_label="exported_pod")
    assert q.energy_joules == ('sum(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{namespace="ml",exported_pod=~"job\\\\-a\\\\-0|'
                               'job\\\\.b"}) * 0.001')
    assert q.power_watts.startswith("sum(DCGM_FI_DEV_POWER_USAGE{") and q.utilization.endswith("/ 100")
    with pytest.raises(ValueError):
        job_queries("ml", [])
