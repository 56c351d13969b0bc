"""Replay of the two "Let's Wait Awhile" (Middleware'21) scenarios on recorded carbon intensity.

Protocol (kept comparable with the paper): the series is sampled at 30-minute
steps (coarser data is repeated) and the jobs arrive in the calendar year the data
covers most (2020 for the paper's files; any year for others, e.g. an Electricity
Maps hourly export of 2023); jobs whose window or deadline falls outside the data
are left out (the paper's files have two spare weeks at each end, so none is); each
job draws constant power; emissions are counted on the
true series; the scheduler decides once, at the job's arrival, from what its
forecaster shows it. ``noisy-oracle`` is the paper's error model (truth plus
Gaussian noise, sd = error x the series mean, one noisy copy per repetition);
``history`` sees nothing after the decision time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from gensched.timing.forecast import NoisyOracle, SeasonalForecaster
from gensched.timing.series import Series
from gensched.timing.slots import CapacityLedger, best_start, cheapest_slots

STEP = timedelta(minutes=30)


def prepare(series: Series) -> Series:
    """30-minute steps: finer data sampled at :00 and :30 (as the paper does), hourly data
    repeated. Data outside the study year stays: it is the history a forecaster and the first
    nightly windows look back on, and room for the last deadlines."""
    try:
        return series.resample(STEP)
    except ValueError as exc:
        raise ValueError(f"the carbon series has a {series.step} step: use data on a step that divides or is a "
                         "multiple of 30 minutes (5, 10, 15, 30 minutes, hourly)") from exc


def study_year(truth: Series) -> tuple[datetime, datetime]:
    """Start and end (UTC) of the calendar year the series covers most; ties go to the earlier."""
    def covered(y: int) -> timedelta:
        lo = max(truth.start, datetime(y, 1, 1, tzinfo=UTC))
        hi = min(truth.end, datetime(y + 1, 1, 1, tzinfo=UTC))
        return max(timedelta(0), hi - lo)
    year = max(range(truth.start.year, min(truth.end.year, 9998) + 1), key=lambda y: (covered(y), -y))
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class BatchJob:
    arrival: int  # slot index
    duration: int  # slots
    deadline: int  # slot index the job must have finished by
    gpus: int = 1


def nightly_jobs(truth: Series, days: int = 365, window_steps: int = 0) -> list[int]:
    """One 30-minute job per day at 01:00 of the study year (slot indices), for the days whose
    window of ``window_steps`` slots either way lies inside the data."""
    first = truth.index_at(study_year(truth)[0] + timedelta(hours=1))
    per_day = round(timedelta(days=1) / truth.step)
    return [a for a in (first + d * per_day for d in range(days))
            if a - window_steps >= 0 and a + window_steps + 1 <= len(truth)]


def next_workday_deadline(finish: datetime) -> datetime:
    """The paper's "next workday" rule on the original finish time."""
    nine = finish.replace(hour=9, minute=0, second=0, microsecond=0)
    hour = finish.hour + finish.minute / 60
    if finish.weekday() == 5:
        return nine + timedelta(days=2)
    if finish.weekday() == 6 or hour > 17:
        return nine + timedelta(days=1)
    if hour < 9:
        return nine
    return finish


def ml_jobs(truth: Series, n: int = 3387, seed: int = 0, gpu_choices: tuple[int, ...] = (1,),
            gpu_weights: tuple[float, ...] = (1.0,)) -> list[BatchJob]:
    """``n`` jobs on the workdays of the study year (2020 for the paper's files): the day uniform
    (multinomial), the start a random half-hour in 09:00-16:30, the duration a random multiple of
    30 minutes in 4 h-89.5 h. When the data covers only part of the year, ``n`` shrinks in
    proportion to the workdays it covers; jobs whose deadline falls after the data are left out."""
    rng = np.random.default_rng(seed)
    year_start, year_end = study_year(truth)
    days = [year_start + timedelta(days=d) for d in range((year_end - year_start).days)]
    all_workdays = [d for d in days if d.weekday() < 5]
    workdays = [d for d in all_workdays if d >= truth.start and d + timedelta(days=1) <= truth.end]
    if not workdays:
        return []
    n = n if len(workdays) == len(all_workdays) else round(n * len(workdays) / len(all_workdays))
    per_day = rng.multinomial(n, [1 / len(workdays)] * len(workdays))
    starts: list[datetime] = []
    for day, k in zip(workdays, per_day, strict=True):
        minutes = np.sort(rng.choice(np.arange(9 * 60, 17 * 60, 30), size=int(k)))
        starts += [day + timedelta(minutes=int(m)) for m in minutes]
    durations = rng.choice(np.arange(4 * 60, 90 * 60, 30), size=n)
    gpus = rng.choice(gpu_choices, size=n, p=np.asarray(gpu_weights) / sum(gpu_weights))
    jobs = []
    for t, d, g in zip(starts, durations, gpus, strict=True):
        finish = t + timedelta(minutes=int(d))
        job = BatchJob(truth.index_at(t), int(d) // 30, truth.index_at(next_workday_deadline(finish)), int(g))
        if job.deadline <= len(truth):
            jobs.append(job)
    return jobs


Forecast = Callable[[int, int], np.ndarray]  # (decision slot, slots) -> forecast values from that slot on


def forecaster_for(kind: str, truth: Series, error: float, seed: int) -> Forecast:
    if kind == "perfect" or (kind == "noisy-oracle" and error == 0):
        return lambda i, n: truth.values[i:i + n]
    if kind == "noisy-oracle":
        noisy = NoisyOracle.of(truth, error, seed).noisy.values
        return lambda i, n: noisy[i:i + n]
    if kind == "history":
        model = SeasonalForecaster()
        keep = round(timedelta(days=model.days + 1) / truth.step)

        cache: dict[int, np.ndarray] = {}

        def hist(i: int, n: int) -> np.ndarray:
            # The current slot's value is observable (providers report it); everything after is forecast.
            # One forecast per decision slot, shared by all jobs deciding then (it depends on the past only).
            got = cache.get(i)
            if got is None or len(got) < n:
                lo = max(0, i + 1 - keep)
                h = Series(truth.time_at(lo), truth.step, truth.values[lo:i + 1])
                got = np.concatenate(([truth.values[i]], model.forecast(h, max(n, 288) - 1).values))
                cache[i] = got
            return got[:n]
        return hist
    raise ValueError(f"unknown forecaster {kind!r}: use noisy-oracle, history or perfect")


@dataclass
class RunResult:
    emissions_g: float
    baseline_emissions_g: float
    missed_deadlines: int
    chosen: list[np.ndarray] = field(default_factory=list)

    @property
    def saving_pct(self) -> float:
        if self.baseline_emissions_g == 0:  # an all-zero signal: nothing to save
            return 0.0
        return 100.0 * (1 - self.emissions_g / self.baseline_emissions_g)


def _g(truth: np.ndarray, slots: np.ndarray, power_kw: float, step_h: float) -> float:
    return float(truth[slots].sum() * power_kw * step_h)


def run_nightly(truth: Series, window_steps: int, forecast: Forecast, power_kw: float = 1.0,
                jobs: list[int] | None = None) -> RunResult:
    """``jobs`` (arrival slots, default :func:`nightly_jobs` for this window) must leave
    ``window_steps`` slots of data either side."""
    step_h = truth.step / timedelta(hours=1)
    em = base = 0.0
    chosen = []
    jobs = nightly_jobs(truth, window_steps=window_steps) if jobs is None else jobs
    if not jobs:
        raise ValueError(f"the carbon series ({truth.start:%Y-%m-%d} to {truth.end:%Y-%m-%d}) holds no night with "
                         f"{window_steps * truth.step} of data either side of 01:00: give more data or a smaller "
                         "--window")
    for a in jobs:
        lo = a - window_steps
        fc = forecast(lo, 2 * window_steps + 1)
        s = lo + int(np.argmin(fc))
        chosen.append(np.array([s]))
        em += _g(truth.values, np.array([s]), power_kw, step_h)
        base += _g(truth.values, np.array([a]), power_kw, step_h)
    return RunResult(em, base, 0, chosen)


def replan_slots(job: BatchJob, forecast: Forecast, interruptible: bool) -> np.ndarray:
    """The operator's behaviour: re-plan at every slot boundary with the forecast of that moment
    and run the current slot only if the fresh plan wants it (a non-interruptible job, once
    started, runs to the end). The deadline holds because each plan fits before it."""
    done: list[int] = []
    i = job.arrival
    while len(done) < job.duration:
        left = job.duration - len(done)
        fc = np.asarray(forecast(i, job.deadline - i), dtype=np.float64)
        if interruptible:
            plan = cheapest_slots(fc, left, len(fc))
            run_now = plan is not None and plan[0] == 0
        else:
            run_now = best_start(fc, left, len(fc)) == 0
        if run_now and not interruptible:
            return np.arange(i, i + job.duration)
        if run_now:
            done.append(i)
        i += 1
    return np.asarray(done)


def run_ml(truth: Series, jobs: list[BatchJob], forecast: Forecast, interruptible: bool,
           capacity: int | None = None, power_kw: float = 1.0, replan: bool = False,
           headroom: int = 0) -> RunResult:
    """Each job decides at arrival (``replan``: at every slot, see :func:`replan_slots`).

    With ``capacity`` the jobs share that many GPUs: plans reserve a ledger (deferred slots
    leave ``headroom`` GPUs for jobs without slack), a job that cannot fit before its deadline
    runs as early as it can (counted as missed if it then ends late), and the baseline is
    run-now in arrival order on the same capacity."""
    step_h = truth.step / timedelta(hours=1)
    vals = truth.values
    ledger = CapacityLedger.flat(capacity, len(vals) + 1) if capacity else None
    base_ledger = CapacityLedger.flat(capacity, len(vals) + 1) if capacity else None
    em = base = 0.0
    missed = 0
    chosen = []
    for job in jobs:
        span = job.deadline - job.arrival
        if job.arrival + span > len(vals):
            raise ValueError("carbon series ends before a job's deadline: give a longer series")
        if replan and ledger is None:
            slots = replan_slots(job, forecast, interruptible)
            missed += int(slots[-1] + 1 > job.deadline)
            chosen.append(slots)
            em += _g(vals, slots, power_kw * job.gpus, step_h)
            base += _g(vals, job.arrival + np.arange(job.duration), power_kw * job.gpus, step_h)
            continue
        fc = np.asarray(forecast(job.arrival, span), dtype=np.float64)
        usable = None
        if ledger:  # later slots keep ``headroom`` GPUs free for jobs that cannot wait
            usable = ledger.usable(job.arrival, span, job.gpus + headroom)
            usable[0] = ledger.free[job.arrival] >= job.gpus
        if interruptible:
            rel = cheapest_slots(fc, job.duration, span, usable)
        else:
            s = best_start(fc, job.duration, span, usable)
            rel = None if s is None else np.arange(s, s + job.duration)
        if rel is None:  # no room before the deadline: earliest start with room, late
            rel = _earliest(ledger, job) - job.arrival if ledger else np.arange(job.duration)
        slots = job.arrival + rel
        if slots[-1] + 1 > job.deadline:
            missed += 1
        if ledger:
            ledger.reserve(slots, job.gpus)
        chosen.append(slots)
        em += _g(vals, slots, power_kw * job.gpus, step_h)
        now_slots = _earliest(base_ledger, job) if base_ledger else job.arrival + np.arange(job.duration)
        if base_ledger:
            base_ledger.reserve(now_slots, job.gpus)
        base += _g(vals, now_slots, power_kw * job.gpus, step_h)
    return RunResult(em, base, missed, chosen)


def _earliest(ledger: CapacityLedger, job: BatchJob) -> np.ndarray:
    """First consecutive run of ``duration`` slots with room, from arrival (FIFO, run-now baseline)."""
    horizon = len(ledger.free) - job.arrival
    usable = ledger.usable(job.arrival, horizon, job.gpus)
    s = best_start(np.zeros(horizon), job.duration, horizon, usable)
    if s is None:
        raise ValueError("capacity too small for a job even at the end of the series")
    return job.arrival + np.arange(s, s + job.duration)
