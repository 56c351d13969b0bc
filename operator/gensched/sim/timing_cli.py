"""``gensched simulate timing``: the "Let's Wait Awhile" scenarios on recorded carbon intensity."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np

from gensched.api.durations import parse_duration
from gensched.sim.timing_sim import (
    Forecast,
    RunResult,
    forecaster_for,
    ml_jobs,
    nightly_jobs,
    prepare,
    run_ml,
    run_nightly,
    study_year,
)
from gensched.timing.forecast import denoise
from gensched.timing.series import Series
from gensched.timing.sources.csv_file import load_csv

DEFAULT_SIGNALS = ("ger_ci.csv", "gb_ci.csv", "fr_ci.csv")
MAX_WINDOW = timedelta(days=7)  # nightly: how far a job may move either way
CAPACITY_MIX = ((1, 2), (0.5, 0.5))  # GPUs per ML job in the capacity variant


def default_signals() -> list[Path]:
    root = Path(os.environ.get("GENSCHED_SHARED_DATA", "../shared/data")) / "carbon-intensity"
    return [root / f for f in DEFAULT_SIGNALS]


def _smoothed(f: Forecast, width: int) -> Forecast:
    return f if width <= 1 else (lambda i, n: denoise(f(i, n), width))


def _one(truth: Series, scenario: str, forecaster: str, error: float, seed: int, window_steps: int,
         interruptible: bool, capacity: int | None, smoothing: int, replan: bool,
         nightly: list[int] | None = None) -> RunResult:
    f = _smoothed(forecaster_for(forecaster, truth, error, seed), smoothing)
    if scenario == "nightly":
        return run_nightly(truth, window_steps, f, jobs=nightly)
    jobs = ml_jobs(truth, gpu_choices=CAPACITY_MIX[0], gpu_weights=CAPACITY_MIX[1]) if capacity else ml_jobs(truth)
    return run_ml(truth, jobs, f, interruptible, capacity=capacity, replan=replan)


def run_timing(signals: list[Path], scenario: str, window: str, error: float, forecaster: str,
               interruptible: bool, repetitions: int, capacity: int | None, smoothing: int | None,
               json_out: Path | None, plot: Path | None, quiet: bool = False) -> dict:
    if scenario not in ("nightly", "ml"):
        raise ValueError(f"--scenario {scenario!r}: use nightly or ml")
    win = _check_args(window, error, forecaster, repetitions, capacity, smoothing)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    reps = repetitions if forecaster == "noisy-oracle" and error > 0 else 1
    if smoothing is None:  # only a noisy forecast gains from smoothing; a perfect one would lose
        smoothing = 3 if forecaster == "noisy-oracle" and error > 0 else 1
    replan = forecaster == "history"  # a fixed noisy copy gives the same plan at every slot
    out: dict = {"scenario": scenario, "forecaster": forecaster, "forecast_error": error, "window": window,
                 "interruptible": interruptible, "capacity_gpus": capacity, "smoothing_slots": smoothing,
                 "repetitions": reps, "signals": {}}
    first_chosen: dict[str, tuple[Series, RunResult]] = {}
    for path in signals:
        try:
            res, chosen = _signal(path, scenario, forecaster, error, win, interruptible, reps, capacity, smoothing,
                                  replan, say)
        except ValueError as exc:  # name the file whose data does not fit
            raise ValueError(f"{path.name}: {exc}") from exc
        out["signals"][path.name] = res
        first_chosen[path.name] = chosen
    if json_out:
        json_out.write_text(json.dumps(out, indent=2))
    if plot:
        draw(first_chosen, plot)
    return out


def _check_args(window: str, error: float, forecaster: str, repetitions: int, capacity: int | None,
                smoothing: int | None) -> timedelta:
    """The CLI's argument rules, also for callers from Python: each error names the option."""
    try:
        win = parse_duration(window)
    except ValueError as exc:
        raise ValueError(f"--window: {exc}") from None
    if win > MAX_WINDOW:
        raise ValueError(f"--window {window}: at most {MAX_WINDOW.days}d")
    if not 0 <= error <= 10:
        raise ValueError(f"--forecast-error {error:g}: use a fraction of the mean between 0 and 10 (0.05 = 5%)")
    if forecaster not in ("noisy-oracle", "history", "perfect"):
        raise ValueError(f"--forecaster {forecaster!r}: use noisy-oracle, history or perfect")
    if not 1 <= repetitions <= 1000:
        raise ValueError(f"--repetitions {repetitions}: use 1 to 1000")
    if capacity is not None and not 2 <= capacity <= 1_000_000:
        raise ValueError(f"--capacity {capacity}: ML jobs take up to 2 GPUs each, use at least 2")
    if smoothing is not None and not 1 <= smoothing <= 48:
        raise ValueError(f"--smoothing {smoothing}: use 1 (off) to 48 slots")
    return win


def _signal(path: Path, scenario: str, forecaster: str, error: float, win: timedelta, interruptible: bool,
            reps: int, capacity: int | None, smoothing: int, replan: bool,
            say: Callable[..., None]) -> tuple[dict, tuple[Series, RunResult]]:
    """One signal file: the runs, the perfect-forecast oracle and (nightly) the window curve."""
    truth = prepare(load_csv(path))
    steps = round(win / truth.step)
    nightly = nightly_jobs(truth, window_steps=steps) if scenario == "nightly" else None
    t0 = time.perf_counter()
    runs = []
    for seed in range(reps):
        r = _one(truth, scenario, forecaster, error, seed, steps, interruptible, capacity, smoothing, replan,
                 nightly)
        runs.append(r)
        say(f"{path.name}: repetition {seed + 1}/{reps}: saving {r.saving_pct:.2f}%, "
            f"missed {r.missed_deadlines}")
    if not runs[0].chosen:
        raise ValueError(f"no {scenario} job fits in the data ({truth.start:%Y-%m-%d} to {truth.end:%Y-%m-%d}): "
                         "give at least a few weeks of carbon intensity")
    oracle = _one(truth, scenario, "perfect", 0.0, 0, steps, interruptible, capacity, 1, False, nightly)
    year = study_year(truth)[0].year
    res = {
        "saving_pct": float(np.mean([r.saving_pct for r in runs])),
        "missed_deadlines": int(sum(r.missed_deadlines for r in runs)),
        "emissions_g": float(np.mean([r.emissions_g for r in runs])),
        "baseline_emissions_g": float(np.mean([r.baseline_emissions_g for r in runs])),
        "oracle_saving_pct": oracle.saving_pct,
        "per_repetition": [{"seed": i, "saving_pct": r.saving_pct, "missed_deadlines": r.missed_deadlines,
                            "emissions_g": r.emissions_g, "baseline_emissions_g": r.baseline_emissions_g}
                           for i, r in enumerate(runs)],
        "wall_s": time.perf_counter() - t0,
        "year": year,
        "jobs": len(runs[0].chosen),
    }
    if scenario == "nightly":  # the same nights for every window, so the curve compares like with like
        res["window_curve"] = [
            {"window_h": w * truth.step / timedelta(hours=1),
             "saving_pct": _one(truth, "nightly", forecaster, error, 0, w, False, None, smoothing,
                                False, nightly).saving_pct}
            for w in range(steps + 1)]
    return res, (truth, runs[0])


def print_table(result: dict) -> None:
    kind = f"{result['scenario']}, {result['forecaster']}"
    if result["forecaster"] == "noisy-oracle":
        kind += f" {result['forecast_error']:g} error"
    if result["scenario"] == "ml":
        kind += ", interruptible" if result["interruptible"] else ", non-interruptible"
    if result["capacity_gpus"]:
        kind += f", {result['capacity_gpus']} GPUs"
    print(f"{kind} (window {result['window']}, {result['repetitions']} repetitions)")
    print(f"{'signal':<14}{'saving %':>10}{'oracle %':>10}{'missed':>8}{'kgCO2':>10}{'baseline':>10}{'wall s':>8}"
          f"{'year':>6}{'jobs':>6}")
    for name, r in result["signals"].items():
        print(f"{name:<14}{r['saving_pct']:>10.2f}{r['oracle_saving_pct']:>10.2f}{r['missed_deadlines']:>8}"
              f"{r['emissions_g'] / 1000:>10.1f}{r['baseline_emissions_g'] / 1000:>10.1f}{r['wall_s']:>8.1f}"
              f"{r['year']:>6}{r['jobs']:>6}")


def draw(chosen: dict[str, tuple[Series, RunResult]], path: Path) -> None:
    """Two weeks of each carbon series with the slots the scheduler used (first repetition)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(chosen), 1, figsize=(11, 2.6 * len(chosen)), squeeze=False)
    for ax, (name, (truth, run)) in zip(axes[:, 0], chosen.items(), strict=True):
        lo = truth.index_at(truth.start + timedelta(days=12))
        hi = lo + round(timedelta(days=14) / truth.step)
        active = np.zeros(len(truth))
        for slots in run.chosen:
            np.add.at(active, slots, 1)
        x = [truth.time_at(i) for i in range(lo, hi)]
        ax.plot(x, truth.values[lo:hi], color="black", lw=1, label="gCO2/kWh")
        ax2 = ax.twinx()
        ax2.fill_between(x, active[lo:hi], step="post", alpha=0.3, label="jobs running")
        ax.set_title(name)
        ax.set_ylabel("gCO2/kWh")
        ax2.set_ylabel("jobs running")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
