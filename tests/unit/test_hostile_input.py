"""Regression tests for the hostile inputs of issue 12 that reach the pure core: durations that
overflow date arithmetic, timezones naming a tz-database folder or 10 KB long, carbon CSV paths
outside the admin's directory, and messages that echo hostile values in full."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from gensched.api import GenerativeJobSpec, SchedulingPolicySpec, TimingSpec, format_validation_error
from gensched.api.durations import MAX_DURATION, MAX_JOB_SPAN, parse_duration, resolve_deadline
from gensched.api.errors import ERRORS_LIMIT, MESSAGE_LIMIT, bounded, one_line, show
from gensched.api.policy import CarbonSpec, OffPeakWindow
from gensched.timing import decide_start
from gensched.timing.planner import latest_end
from gensched.timing.series import MAX_SLOTS, Series, series_from_points
from gensched.timing.sources.base import SignalError
from gensched.timing.sources.csv_file import CSV_DIR_ENV, CsvSource, confine, load_csv
from gensched.timing.sources.factory import build_feed, build_source

NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
JOB = {"mode": "Batch", "model": {"name": "m", "parametersBillions": 7, "image": "img"},
       "resources": {"gpus": 1}, "batch": {"input": "s3://x"}}
HOSTILE = "x" * 10_000


def job_errors(batch: dict) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        GenerativeJobSpec.model_validate({**JOB, "batch": {"input": "s3://x", **batch}})
    return [str(e) for e in format_validation_error(exc.value)]


def policy_errors(timing: dict) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        SchedulingPolicySpec.model_validate({"timing": timing})
    return [str(e) for e in format_validation_error(exc.value)]


# 1. Durations large enough to overflow date arithmetic -----------------------------------------

@pytest.mark.parametrize(("batch", "field"), [
    ({"deadline": "999999999d"}, "spec.batch.deadline: batch.deadline '999999999d' is longer than the maximum 366d"),
    ({"deadline": "367d"}, "spec.batch.deadline: batch.deadline '367d' is longer than the maximum 366d"),
    ({"estimatedDuration": "99999999999d"},
     "spec.batch.estimatedDuration: batch.estimatedDuration '99999999999d' is longer than the maximum 366d"),
    ({"estimatedDuration": "9" * 60 + "d"}, "spec.batch.estimatedDuration: batch.estimatedDuration"),
    ({"deadline": "9999-12-31T23:59:59Z"}, "spec.batch.deadline: '9999-12-31T23:59:59Z' is not a plausible deadline"),
    ({"deadline": "0001-01-01T00:00:00+01:00"}, "spec.batch.deadline: '0001-01-01T00:00:00+01:00' is out of range"),
])
def test_job_durations_that_overflow_are_refused_naming_field_and_maximum(batch: dict, field: str) -> None:
    found = job_errors(batch)
    assert any(e.startswith(field.split(" is out of range")[0]) for e in found), found
    assert all("OverflowError" not in e for e in found)


def test_deadline_and_run_limits_hold_at_the_boundary() -> None:
    ok = GenerativeJobSpec.model_validate({**JOB, "batch": {"input": "x", "deadline": "366d",
                                                            "estimatedDuration": "366d"}})
    assert ok.batch is not None and parse_duration(ok.batch.deadline or "") == MAX_JOB_SPAN
    far = GenerativeJobSpec.model_validate({**JOB, "batch": {"input": "x", "deadline": "2030-01-01T00:00:00Z"}})
    assert far.batch is not None  # an absolute deadline years ahead is fine: deferral is bounded by maxDeferral
    with pytest.raises(ValueError, match=r"before 1970|plausible"):
        resolve_deadline("1969-12-31T23:59:59Z", NOW)


@pytest.mark.parametrize(("timing", "expected"), [
    ({"maxDeferral": "999999999d"}, "spec.timing.maxDeferral: timing.maxDeferral '999999999d' is longer than the "
                                    "maximum 366d: use at most 366d"),
    ({"safetyMargin": "99999999999d"}, "spec.timing.safetyMargin: timing.safetyMargin '99999999999d' is longer than "
                                       "the maximum 366d"),
    ({"carbon": {"provider": "GBCarbonIntensity", "refresh": "999999999d"}},
     "spec.timing.carbon.refresh: timing.carbon.refresh '999999999d' is longer than the maximum 1d"),
    ({"carbon": {"provider": "GBCarbonIntensity", "maxAge": "99999999999d"}},
     "spec.timing.carbon.maxAge: timing.carbon.maxAge '99999999999d' is longer than the maximum 30d"),
])
def test_policy_durations_that_overflow_are_refused_naming_field_and_maximum(timing: dict, expected: str) -> None:
    found = policy_errors(timing)
    assert any(e.startswith(expected) for e in found), found


def test_parse_duration_is_bounded_whatever_the_caller() -> None:
    assert parse_duration("3660d") == MAX_DURATION
    for text in ("3661d", "99999999999d", "9" * 60 + "s"):
        with pytest.raises(ValueError, match="longer than the longest duration"):
            parse_duration(text)
    with pytest.raises(ValueError, match="too long for a duration"):
        parse_duration("1d" * 40)


def _unchecked(**fields: object) -> TimingSpec:
    """A TimingSpec as a policy stored by an older operator could hold it: never validated."""
    base = TimingSpec().model_dump()
    base.update(fields)
    return TimingSpec.model_construct(**base)


@pytest.mark.parametrize("timing", [
    _unchecked(mode="OffPeak", max_deferral="999999999d", off_peak_windows=[OffPeakWindow(start="22:00", end="06:00")]),
    _unchecked(mode="OffPeak", safety_margin="99999999999d",
               off_peak_windows=[OffPeakWindow(start="22:00", end="06:00")]),
    _unchecked(mode="OffPeak", off_peak_windows=[OffPeakWindow.model_construct(
        days=["Mon"], start="22:00", end="06:00", timezone="Europe", price_per_kwh=None)]),
    _unchecked(mode="OffPeak", off_peak_windows=[OffPeakWindow.model_construct(
        days=["Mon"], start="22:00", end="06:00", timezone=HOSTILE, price_per_kwh=None)]),
    _unchecked(mode="OffPeak", holidays=["not-a-date"], off_peak_windows=[OffPeakWindow(start="22:00", end="06:00")]),
    _unchecked(mode="CarbonAware", max_deferral="3660d"),
])
def test_the_planner_never_raises_on_a_policy_that_skipped_validation(timing: TimingSpec) -> None:
    d = decide_start(NOW, timing, NOW + timedelta(hours=30), timedelta(hours=2))
    assert d.start >= NOW and len(d.reason) < 500 and len(d.warning or "") < 500


@pytest.mark.parametrize(("deadline", "estimated"), [
    (datetime.max.replace(tzinfo=UTC), timedelta(hours=2)),
    (datetime.min.replace(tzinfo=UTC), timedelta(hours=2)),
    (NOW + timedelta(days=1), timedelta.max),
    (None, timedelta(days=3000)),
])
def test_the_planner_never_overflows_on_extreme_deadlines_or_runs(deadline: datetime | None,
                                                                  estimated: timedelta) -> None:
    timing = SchedulingPolicySpec.model_validate({"timing": {
        "mode": "OffPeak", "maxDeferral": "366d", "safetyMargin": "366d",
        "offPeakWindows": [{"start": "22:00", "end": "06:00", "timezone": "Europe/Berlin"}]}}).timing
    d = decide_start(NOW, timing, deadline, estimated)
    assert d.start >= NOW
    assert latest_end(NOW, timing, deadline, timedelta(hours=1)) >= datetime.min.replace(tzinfo=UTC)


# 2. Timezones that name a tz-database folder or are 10 KB long ----------------------------------

@pytest.mark.parametrize(("tz", "message"), [
    ("Europe", "unknown timezone 'Europe'"), ("America", "unknown timezone 'America'"),
    (HOSTILE, "at most 64 characters"), ("../../etc/passwd", "should match pattern"),
    ("zone.tab", "should match pattern"), ("Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
])
def test_offpeak_timezone_folder_or_overlong_is_refused_by_field(tz: str, message: str) -> None:
    found = policy_errors({"mode": "OffPeak", "offPeakWindows": [{"start": "22:00", "end": "06:00", "timezone": tz}]})
    assert any(e.startswith("spec.timing.offPeakWindows[0].timezone: ") and message in e for e in found), found
    assert all(len(e) < 600 for e in found)


def test_real_timezones_still_pass() -> None:
    for tz in ("UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+1", "America/Port-au-Prince"):
        OffPeakWindow(start="22:00", end="06:00", timezone=tz)


# 3. Carbon CSV confined to the admin's directory; contents never echoed -------------------------

SECRET = "root:x:0:0:TOPSECRET-VALUE"


@pytest.fixture
def csv_dir(tmp_path: Path) -> Path:
    d = tmp_path / "carbon"
    d.mkdir()
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    rows = "".join(f"{t0 + timedelta(minutes=30 * i):%Y-%m-%d %H:%M:%S},{100 + i % 48}\n" for i in range(48 * 5))
    (d / "ci.csv").write_text("Time,Carbon Intensity\n" + rows)
    (tmp_path / "outside.csv").write_text("Time,Carbon Intensity\n" + rows)
    (tmp_path / "secret.txt").write_text(SECRET + "\nmore secrets\n")
    return d


def csv_spec(path: str) -> CarbonSpec:
    return CarbonSpec.model_validate({"provider": "CSV", "csvPath": path})


def test_csv_provider_is_refused_without_a_configured_directory(csv_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(CSV_DIR_ENV, raising=False)
    with pytest.raises(SignalError, match=r"no carbon CSV directory.*--carbon-csv-dir") as info:
        build_source(csv_spec(str(csv_dir / "ci.csv")), lambda n, k: None)
    assert "csvPath" in str(info.value)


@pytest.mark.parametrize("path", ["/etc/passwd", "/proc/self/environ", "../secret.txt", "{dir}/../secret.txt",
                                  "{dir}/../outside.csv", "{dir}", ".", "/"])
def test_csv_paths_outside_the_directory_are_refused(csv_dir: Path, path: str) -> None:
    with pytest.raises(SignalError, match="outside the carbon CSV directory") as info:
        build_source(csv_spec(path.format(dir=csv_dir)), lambda n, k: None, csv_dir=str(csv_dir))
    assert "root:" not in str(info.value) and "TOPSECRET" not in str(info.value)


def test_symlinks_are_resolved_before_the_check_even_when_swapped_later(csv_dir: Path) -> None:
    (csv_dir / "passwd.csv").symlink_to("/etc/passwd")
    (csv_dir / "up.csv").symlink_to(csv_dir.parent / "secret.txt")
    for name in ("passwd.csv", "up.csv"):
        with pytest.raises(SignalError, match="outside the carbon CSV directory"):
            build_source(csv_spec(name), lambda n, k: None, csv_dir=str(csv_dir))
    link = csv_dir / "swap.csv"
    link.symlink_to(csv_dir / "ci.csv")
    src = build_source(csv_spec("swap.csv"), lambda n, k: None, csv_dir=str(csv_dir))
    assert len(src.fetch(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))) == 48
    link.unlink()
    link.symlink_to(csv_dir.parent / "secret.txt")  # replaced after the policy was accepted
    with pytest.raises(SignalError, match="outside the carbon CSV directory") as info:
        src.fetch(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    assert "TOPSECRET" not in str(info.value)


def test_a_relative_or_absolute_path_inside_the_directory_works_through_the_env(csv_dir: Path,
                                                                                monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(CSV_DIR_ENV, str(csv_dir))
    for path in ("ci.csv", str(csv_dir / "ci.csv"), "./sub/../ci.csv"):
        feed = build_feed(csv_spec(path), lambda n, k: None)
        got = feed.get(datetime(2026, 3, 2, 6, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
        assert got.forecast is not None and got.degraded is None


@pytest.mark.parametrize("content", [
    SECRET + "\n",  # /etc/passwd-like: its first line is the header
    "Time,Carbon Intensity\n" + SECRET + ",1\n2026-01-01 00:00:00,1\n",  # a bad time
    "Time,Carbon Intensity\n2026-01-01 00:00:00," + SECRET + "\n2026-01-01 00:30:00,1\n",  # a bad value
    "Time,Carbon Intensity\n2026-01-01 00:00:00,nan\n2026-01-01 00:30:00,1\n",
    "Time,Carbon Intensity\n2026-01-01 00:00:00\x00," + SECRET + "\n",  # NUL byte
])
def test_csv_errors_name_the_file_and_the_problem_never_the_contents(csv_dir: Path, content: str) -> None:
    bad = csv_dir / "bad.csv"
    bad.write_text(content)
    with pytest.raises(SignalError) as info:
        CsvSource("bad.csv", root=csv_dir).fetch(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    text = str(info.value)
    assert "bad.csv" in text and "TOPSECRET" not in text and "root:" not in text and "nan" not in text.split(":")[-1]


def test_binary_and_oversized_files_and_stray_rows_are_clear_errors(csv_dir: Path) -> None:
    (csv_dir / "bin.csv").write_bytes(b"Time,Carbon Intensity\n\xff\xfe\x00garbage")
    with pytest.raises(SignalError, match=r"not UTF-8|not a readable CSV"):
        load_csv(csv_dir / "bin.csv")
    stray = csv_dir / "stray.csv"
    stray.write_text("Time,Carbon Intensity\n2020-01-01 00:00:00,1\n2020-01-01 00:00:01,1\n2080-01-01 00:00:00,1\n")
    with pytest.raises(SignalError, match="more than"):
        load_csv(stray)
    with pytest.raises(ValueError, match=str(MAX_SLOTS)):
        series_from_points([(NOW, 1.0), (NOW + timedelta(seconds=1), 1.0), (NOW + timedelta(days=9000), 1.0)])
    assert len(Series(NOW, timedelta(hours=1), [1.0, 2.0])) == 2


def test_the_controller_signature_still_works_with_the_env(csv_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """controller/signals.py calls build_feed(carbon, read_secret): the directory comes from the env."""
    monkeypatch.setenv(CSV_DIR_ENV, str(csv_dir))
    assert build_feed(csv_spec("ci.csv"), lambda n, k: None).source.name == "CSV ci.csv"
    monkeypatch.setenv(CSV_DIR_ENV, str(csv_dir / "missing"))
    with pytest.raises(SignalError, match="does not exist"):
        build_feed(csv_spec("ci.csv"), lambda n, k: None)
    assert confine("ci.csv", csv_dir) == (csv_dir / "ci.csv").resolve()
    assert os.path.isabs(confine("ci.csv", csv_dir))


# 4. Bounded messages -----------------------------------------------------------------------------

def test_bounded_truncates_with_an_ellipsis() -> None:
    assert bounded("short") == "short"
    cut = bounded(HOSTILE, 100)
    assert len(cut) == 100 and cut.endswith("…") and cut.startswith("xxx")
    assert len(bounded(HOSTILE)) == MESSAGE_LIMIT
    assert bounded(10**5000, 50) == "<a value too long to show>"
    assert show("a\nb\x1b[31m") == "'a\\nb\\x1b[31m'"
    assert one_line("a\nb\x1bc") == "a\\nb\\x1bc"
    with pytest.raises(ValueError):
        bounded("x", 0)


@pytest.mark.parametrize("doc", [
    {**JOB, "batch": {"input": "x", "deadline": HOSTILE}},
    {**JOB, "batch": {"input": "x", "estimatedDuration": HOSTILE}},
    {**JOB, "model": {**JOB["model"], HOSTILE: 1}},  # an unknown field named by 10 KB
    {**JOB, "tolerations": [{"key": HOSTILE}] * 30},  # many problems at once
])
def test_validation_messages_never_echo_a_10kb_value(doc: dict) -> None:
    with pytest.raises(ValidationError) as exc:
        GenerativeJobSpec.model_validate(doc)
    found = format_validation_error(exc.value)
    assert found and len(found) <= ERRORS_LIMIT + 1
    joined = "; ".join(str(e) for e in found)
    assert "x" * 300 not in joined and all(len(str(e)) < 800 for e in found)
    assert all(e.field.startswith("spec") for e in found)


def test_policy_messages_never_echo_a_10kb_value() -> None:
    found = policy_errors({"holidays": [HOSTILE], "offPeakWindows": [
        {"start": "22:00", "end": "06:00", "timezone": HOSTILE}]})
    assert any(e.startswith("spec.timing") for e in found)
    assert all("x" * 100 not in e for e in found)
