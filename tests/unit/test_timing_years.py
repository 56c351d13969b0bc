"""``gensched simulate timing`` on any year and region file the CSV provider reads (issue 12: it
crashed with IndexError / "argmin of an empty sequence" on anything but the 2020 files)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gensched.sim import timing_sim as ts
from gensched.sim.timing_cli import run_timing
from gensched.timing.series import Series
from gensched.timing.sources.csv_file import EM_DIRECT, EM_LCA, EM_TIME, load_csv
from tests.conftest import SHARED_DATA

CALIFORNIA = SHARED_DATA / "carbon-intensity" / "US-CAL-CISO_2023_hourly.csv"


def intensity(t: datetime) -> float:
    """A daily cycle, dirtier on workdays (so shifting has something to gain)."""
    return 250 + 100 * math.cos(2 * math.pi * (t.hour - 19) / 24) + (30 if t.weekday() < 5 else 0)


def em_hourly(path: Path, start: datetime, end: datetime) -> Path:
    """An Electricity Maps hourly export, as for US-CAL-CISO_2023_hourly.csv."""
    rows, t = [], start
    while t < end:
        rows.append(f"{t:%Y-%m-%d %H:%M:%S},XX,Zone,XX,{intensity(t) * 0.8:.2f},{intensity(t):.2f},50,40,src,false,")
        t += timedelta(hours=1)
    path.write_text(f"{EM_TIME},Country,Zone Name,Zone Id,{EM_DIRECT},{EM_LCA},Low Carbon Percentage,"
                    "Renewable Percentage,Data Source,Data Estimated,Data Estimation Method\n" + "\n".join(rows) + "\n")
    return path


def lwa(path: Path, start: datetime, end: datetime, step: timedelta = timedelta(minutes=15)) -> Path:
    rows, t = [], start
    while t < end:
        rows.append(f"{t:%Y-%m-%d %H:%M:%S},{intensity(t)}")
        t += step
    path.write_text("Time,Carbon Intensity\n" + "\n".join(rows) + "\n")
    return path


def run(paths: list[Path], scenario: str, **kw: object) -> dict:
    args = {"window": "8h", "error": 0.0, "forecaster": "perfect", "interruptible": False, "repetitions": 1,
            "capacity": None, "smoothing": None, "json_out": None, "plot": None, "quiet": True} | kw
    return run_timing(paths, scenario, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "start", "end", "year"), [
    ("exactly-2023.csv", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC), 2023),  # no spare days
    ("leap-2024.csv", datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC), 2024),
    ("spring-2021.csv", datetime(2021, 3, 1, tzinfo=UTC), datetime(2021, 6, 1, tzinfo=UTC), 2021),  # part of a year
])
def test_both_scenarios_run_on_hourly_data_of_any_year(tmp_path: Path, name: str, start: datetime, end: datetime,
                                                       year: int) -> None:
    path = em_hourly(tmp_path / name, start, end)
    nightly = run([path], "nightly")["signals"][name]
    assert nightly["year"] == year and nightly["missed_deadlines"] == 0 and nightly["saving_pct"] > 0
    first_night, last_night = 1, round((end - start) / timedelta(days=1)) - 1
    assert first_night < nightly["jobs"] <= last_night + 1  # the first night has no 8 h of data before 01:00
    curve = nightly["window_curve"]
    assert curve[0]["saving_pct"] == pytest.approx(0.0) and len(curve) == 17
    ml = run([path], "ml", interruptible=True)["signals"][name]
    assert ml["year"] == year and ml["missed_deadlines"] == 0 and ml["jobs"] > 0 and ml["saving_pct"] > 0


def test_ml_jobs_keep_the_paper_density_and_drop_only_what_the_data_cannot_hold(tmp_path: Path) -> None:
    full = ts.prepare(load_csv(em_hourly(tmp_path / "a.csv", datetime(2023, 1, 1, tzinfo=UTC),
                                         datetime(2024, 1, 1, tzinfo=UTC))))
    assert full.step == ts.STEP  # hourly data repeated to 30-minute slots
    jobs = ts.ml_jobs(full)
    assert 3300 < len(jobs) < 3387  # the last days' deadlines fall after the data: left out
    assert all(j.deadline <= len(full) and full.time_at(j.arrival).year == 2023 for j in jobs)
    spring = ts.prepare(load_csv(em_hourly(tmp_path / "b.csv", datetime(2023, 3, 1, tzinfo=UTC),
                                           datetime(2023, 6, 1, tzinfo=UTC))))
    assert 600 < len(ts.ml_jobs(spring)) < 900  # a quarter of the year: about a quarter of the jobs


def test_the_2020_protocol_is_unchanged(tmp_path: Path) -> None:
    """The paper's files run 2019-12-20 .. 2021-01-09: 2020 is the study year, every job kept."""
    truth = Series(datetime(2019, 12, 20, tzinfo=UTC), ts.STEP, [1.0] * (48 * 387))
    assert ts.study_year(truth) == (datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC))
    assert len(ts.nightly_jobs(truth, window_steps=16)) == 365 and len(ts.ml_jobs(truth)) == 3387


def test_too_little_data_or_an_odd_step_is_a_clear_error(tmp_path: Path) -> None:
    short = lwa(tmp_path / "short.csv", datetime(2022, 5, 2, tzinfo=UTC), datetime(2022, 5, 2, 12, tzinfo=UTC))
    with pytest.raises(ValueError, match=r"short\.csv: .*no night"):
        run([short], "nightly")
    with pytest.raises(ValueError, match=r"short\.csv: no ml job fits in the data"):
        run([short], "ml")
    odd = lwa(tmp_path / "odd.csv", datetime(2022, 5, 2, tzinfo=UTC), datetime(2022, 6, 2, tzinfo=UTC),
              step=timedelta(minutes=45))
    with pytest.raises(ValueError, match=r"odd\.csv: the carbon series has a 0:45:00 step"):
        run([odd], "nightly")
    with pytest.raises(ValueError, match="--window 8d: at most 7d"):
        run([odd], "nightly", window="8d")
    with pytest.raises(ValueError, match="--capacity 1"):
        run([odd], "ml", capacity=1)


@pytest.mark.skipif(not CALIFORNIA.is_file(), reason=f"{CALIFORNIA} is absent (see ../shared/data)")
@pytest.mark.parametrize("scenario", ["nightly", "ml"])
def test_the_shipped_2023_california_file_through_the_cli(tmp_path: Path, scenario: str) -> None:
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "gensched", "simulate", "timing", "--scenario", scenario,
                           "--signal", str(CALIFORNIA), "--forecaster", "perfect", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "2023" in proc.stdout
    got = json.loads(out.read_text())["signals"][CALIFORNIA.name]
    assert got["year"] == 2023 and got["missed_deadlines"] == 0 and got["saving_pct"] > 0 and got["jobs"] > 300
