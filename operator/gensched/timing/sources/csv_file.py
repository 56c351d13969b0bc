"""Recorded carbon intensity from CSV: the ``Time,Carbon Intensity`` files of "Let's Wait
Awhile" and the Electricity Maps hourly export (``Datetime (UTC)``, ``Carbon Intensity
gCO₂eq/kWh (direct)`` / ``(LCA)``).

A SchedulingPolicy names the file (``timing.carbon.csvPath``) but anyone who may create a
policy is not trusted with the operator's file system: the operator reads CSVs only inside the
directory its admin configured (``gensched run --carbon-csv-dir DIR``, exported as
``GENSCHED_CARBON_CSV_DIR``); symlinks and ``..`` are resolved before the check, and no error
ever quotes the file's contents (they end up in namespaced Events), only its path and what is
wrong with it.
"""

from __future__ import annotations

import csv
import math
import os
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from gensched.api.errors import bounded, show
from gensched.timing.series import Series, as_utc, series_from_points
from gensched.timing.sources.base import SignalError

__all__ = ["CSV_DIR_ENV", "MAX_CSV_BYTES", "CsvSource", "SignalError", "confine", "load_csv"]

EM_TIME = "Datetime (UTC)"
EM_DIRECT = "Carbon Intensity gCO₂eq/kWh (direct)"
EM_LCA = "Carbon Intensity gCO₂eq/kWh (LCA)"
CSV_DIR_ENV = "GENSCHED_CARBON_CSV_DIR"  # the one directory policies' CSV files may live in
MAX_CSV_BYTES = 64 * 2**20  # a year of 5-minute data is about 4 MB


def _where(p: Path) -> str:
    return bounded(str(p), 200)


def _parse_time(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def load_csv(path: str | Path, column: str | None = None) -> Series:
    """Read a regular series; gaps are filled with the previous value so planning never sees a
    hole. Errors name the file, the line and what is wrong, never the line's contents."""
    p = Path(path)
    if not p.is_file():
        raise SignalError(f"carbon CSV {_where(p)} not found: set timing.carbon.csvPath (or --signal) to a file "
                          "the operator can read")
    try:
        size = p.stat().st_size
        if size > MAX_CSV_BYTES:
            raise SignalError(f"carbon CSV {_where(p)} is {size / 2**20:.0f} MiB: at most "
                              f"{MAX_CSV_BYTES // 2**20} MiB are read; trim it to the period you plan on")
        with p.open(newline="", encoding="utf-8") as fh:
            times, vals = _rows(p, csv.DictReader(fh), column)
    except UnicodeDecodeError as exc:
        raise SignalError(f"carbon CSV {_where(p)} is not UTF-8 text: give a CSV file") from exc
    except csv.Error as exc:  # NUL bytes, over-long fields: the reason only, the line stays private
        raise SignalError(f"carbon CSV {_where(p)}: not a readable CSV file ({exc.__class__.__name__})") from exc
    except OSError as exc:
        raise SignalError(f"carbon CSV {_where(p)} not readable ({exc.strerror or exc.__class__.__name__}): "
                          "set timing.carbon.csvPath to a file the operator can read") from exc
    if len(times) < 2:
        raise SignalError(f"{_where(p)}: needs at least two rows to know the step")
    if any(b <= a for a, b in pairwise(times)) and sorted(times) != times:
        raise SignalError(f"{_where(p)}: times must increase")
    try:
        return series_from_points(list(zip(times, vals, strict=True)))
    except ValueError as exc:  # e.g. rows years apart on a minute step: too many slots to hold
        raise SignalError(f"{_where(p)}: {exc}") from exc


def _rows(p: Path, reader: csv.DictReader, column: str | None) -> tuple[list[datetime], list[float]]:
    cols = reader.fieldnames or []
    if column is None:
        if "Time" in cols and "Carbon Intensity" in cols:
            tcol, vcol = "Time", "Carbon Intensity"
        elif EM_TIME in cols and (EM_LCA in cols or EM_DIRECT in cols):
            tcol, vcol = EM_TIME, EM_LCA if EM_LCA in cols else EM_DIRECT
        else:
            raise SignalError(f"{_where(p)}: unknown CSV format (its header has {len(cols)} column(s), none of them "
                              f"the expected ones): expected 'Time,Carbon Intensity' or an Electricity Maps "
                              f"export with '{EM_TIME}'")
    else:
        tcol = "Time" if "Time" in cols else EM_TIME
        vcol = column
        if vcol not in cols or tcol not in cols:
            raise SignalError(f"{_where(p)}: has no column {show(vcol)} next to 'Time' or '{EM_TIME}'")
    times: list[datetime] = []
    vals: list[float] = []
    for n, row in enumerate(reader, start=2):
        t, v = row.get(tcol), row.get(vcol)
        if t is None or v is None:
            raise SignalError(f"{_where(p)}:{n}: bad row: fewer columns than the header")
        try:
            times.append(_parse_time(t))
        except (ValueError, TypeError, OverflowError) as exc:
            raise SignalError(f"{_where(p)}:{n}: bad row: column {tcol!r} is not an ISO 8601 time "
                              "such as 2020-01-01 00:30:00") from exc
        try:
            value = float(v)
        except (ValueError, TypeError) as exc:
            raise SignalError(f"{_where(p)}:{n}: bad row: column {vcol!r} is not a number") from exc
        if not math.isfinite(value):
            raise SignalError(f"{_where(p)}:{n}: bad row: column {vcol!r} is not a finite number")
        vals.append(value)
    return times, vals


def confine(path: str, root: str | Path | None) -> Path:
    """The real path of ``path`` (relative paths are taken inside ``root``), refused unless it
    lies inside ``root`` once symlinks and ``..`` are resolved. ``root`` unset: CSV is off."""
    if not root:
        raise SignalError("timing.carbon.csvPath cannot be read: the operator has no carbon CSV directory "
                          f"(start it with --carbon-csv-dir DIR or {CSV_DIR_ENV}=DIR and put the file there), "
                          "or use another timing.carbon.provider")
    try:
        base = Path(root).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise SignalError(f"the carbon CSV directory {_where(Path(root))} does not exist: fix --carbon-csv-dir "
                          f"({CSV_DIR_ENV})") from exc
    if not base.is_dir():
        raise SignalError(f"the carbon CSV directory {_where(base)} is not a directory: fix --carbon-csv-dir "
                          f"({CSV_DIR_ENV})")
    if not isinstance(path, str) or not path or len(path) > 1024 or "\0" in path:
        raise SignalError(f"timing.carbon.csvPath {show(path)} is not a usable file name: name a file in "
                          f"{_where(base)}")
    wanted = Path(path) if os.path.isabs(path) else base / path
    try:
        real = wanted.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise SignalError(f"timing.carbon.csvPath {show(path)} cannot be resolved: name a file in "
                          f"{_where(base)}") from exc
    if not real.is_relative_to(base) or real == base:
        raise SignalError(f"timing.carbon.csvPath {show(path)} is outside the carbon CSV directory {_where(base)}: "
                          "put the file there and name it relative to it (symlinks and '..' are resolved "
                          "before this check)")
    return real


class CsvSource:
    """Replay of a recorded series: the recorded future serves as the forecast (deterministic
    what-if runs and tests); with ``timing.carbon.forecaster: History`` the feed forecasts instead.

    ``root`` set (the operator's case): the path is re-checked against it before every read,
    so replacing the file by a symlink to somewhere else does not get around the confinement."""

    has_forecast = True

    def __init__(self, path: str | Path, root: str | Path | None = None) -> None:
        self.requested = str(path)
        self.root = root
        self.path = confine(self.requested, root) if root is not None else Path(path)
        self.name = f"CSV {bounded(self.path.name, 100)}"
        self._series: Series | None = None
        self._mtime = -1.0

    def fetch(self, start: datetime, end: datetime) -> Series:
        if self.root is not None:
            real = confine(self.requested, self.root)
            if real != self.path:  # the name now leads to another file: forget the old one
                self.path, self._series = real, None
        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            raise SignalError(f"carbon CSV {_where(self.path)} not readable ({exc.strerror}): "
                              "set timing.carbon.csvPath to a file the operator can read") from exc
        if self._series is None or mtime != self._mtime:  # re-read when the file is replaced
            self._series, self._mtime = load_csv(self.path), mtime
        got = self._series.slice(start, end)
        if len(got) == 0:
            raise SignalError(f"carbon CSV {_where(self.path)} has no data for {start.isoformat()}..{end.isoformat()} "
                              f"(it covers {self._series.start.isoformat()}..{self._series.end.isoformat()})")
        return got
