"""Time shifting on the recorded carbon intensity of 2020 (skipped when ../shared/data is absent)."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

CI = SHARED_DATA / "carbon-intensity"
pytestmark = pytest.mark.skipif(not (CI / "ger_ci.csv").is_file(), reason=f"{CI} is absent (see ../shared/data)")


def _simulate(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "gensched.cli", "simulate", "timing", *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env={"GENSCHED_SHARED_DATA": str(SHARED_DATA),
                                                                            "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "saving %" in proc.stdout and "repetition" in proc.stderr  # table and progress
    return json.loads(out.read_text())


def test_nightly_with_perfect_forecast_reproduces_the_paper(tmp_path: Path) -> None:
    r = _simulate(tmp_path, "--scenario", "nightly", "--window", "8h", "--forecaster", "perfect")
    got = {k: v["saving_pct"] for k, v in r["signals"].items()}
    # Published: 13.5 / 10.2 / 7.6 % (one decimal).
    assert round(got["ger_ci.csv"], 1) >= 13.5 and round(got["gb_ci.csv"], 1) >= 10.2
    assert round(got["fr_ci.csv"], 1) >= 7.6
    curve = r["signals"]["ger_ci.csv"]["window_curve"]
    assert curve[0]["saving_pct"] == 0 and len(curve) == 17  # W = 0 .. 8 h in 30-minute steps
    assert all(a["saving_pct"] <= b["saving_pct"] + 1e-9 for a, b in pairwise(curve))


def test_ml_jobs_with_noisy_forecast_never_miss_and_save(tmp_path: Path) -> None:
    r = _simulate(tmp_path, "--scenario", "ml", "--forecaster", "noisy-oracle", "--forecast-error", "0.05",
                  "--interruptible", "--repetitions", "2", "--signal", str(CI / "gb_ci.csv"))
    gb = r["signals"]["gb_ci.csv"]
    assert gb["missed_deadlines"] == 0 and len(gb["per_repetition"]) == 2
    assert 8.5 < gb["saving_pct"] <= gb["oracle_saving_pct"]  # published: 9.0 %


def test_bad_signal_path_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "gensched.cli", "simulate", "timing", "--signal",
                           str(tmp_path / "nope.csv")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not found" in proc.stderr and "csvPath" in proc.stderr
