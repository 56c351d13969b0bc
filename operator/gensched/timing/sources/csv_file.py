"""Recorded carbon intensity from CSV: the ``Time,Carbon Intensity`` files of "Let's Wait
Awhile" and the Electricity Maps hourly export (``Datetime (UTC)``, ``Carbon Intensity
gCO₂eq/kWh (direct)`` / ``(LCA)``)."""

from __future__ import annotations

import csv
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from gensched.timing.series import Series, as_utc, series_from_points
from gensched.timing.sources.base import SignalError

__all__ = ["CsvSource", "SignalError", "load_csv"]

EM_TIME = "Datetime (UTC)"
EM_DIRECT = "Carbon Intensity gCO₂eq/kWh (direct)"
EM_LCA = "Carbon Intensity gCO₂eq/kWh (LCA)"


def _parse_time(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def load_csv(path: str | Path, column: str | None = None) -> Series:
    """Read a regular series; gaps are filled with the previous value (documented, counted in
    ``load_csv.filled``) so planning never sees a hole."""
    p = Path(path)
    if not p.is_file():
        raise SignalError(f"carbon CSV {p} not found: set timing.carbon.csvPath to a file the operator can read")
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if column is None:
            if "Time" in cols and "Carbon Intensity" in cols:
                tcol, vcol = "Time", "Carbon Intensity"
            elif EM_TIME in cols and (EM_LCA in cols or EM_DIRECT in cols):
                tcol, vcol = EM_TIME, EM_LCA if EM_LCA in cols else EM_DIRECT
            else:
                raise SignalError(f"{p}: unknown CSV format (columns {cols}); expected 'Time,Carbon Intensity' "
                                  f"or an Electricity Maps export with '{EM_TIME}'")
        else:
            tcol = "Time" if "Time" in cols else EM_TIME
            vcol = column
        times: list[datetime] = []
        vals: list[float] = []
        for n, row in enumerate(reader, start=2):
            try:
                times.append(_parse_time(row[tcol]))
                vals.append(float(row[vcol]))
            except (KeyError, ValueError, TypeError) as exc:
                raise SignalError(f"{p}:{n}: bad row {row!r}: {exc}") from exc
    if len(times) < 2:
        raise SignalError(f"{p}: needs at least two rows to know the step")
    if any(b <= a for a, b in pairwise(times)) and sorted(times) != times:
        raise SignalError(f"{p}: times must increase")
    return series_from_points(list(zip(times, vals, strict=True)))


class CsvSource:
    """Replay of a recorded series: the recorded future serves as the forecast (deterministic
    what-if runs and tests); with ``timing.carbon.forecaster: History`` the feed forecasts instead."""

    has_forecast = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"CSV {self.path.name}"
        self._series: Series | None = None
        self._mtime = -1.0

    def fetch(self, start: datetime, end: datetime) -> Series:
        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            raise SignalError(f"carbon CSV {self.path} not readable ({exc.strerror}): "
                              "set timing.carbon.csvPath to a file the operator can read") from exc
        if self._series is None or mtime != self._mtime:  # re-read when the file is replaced
            self._series, self._mtime = load_csv(self.path), mtime
        got = self._series.slice(start, end)
        if len(got) == 0:
            raise SignalError(f"carbon CSV {self.path} has no data for {start.isoformat()}..{end.isoformat()} "
                              f"(it covers {self._series.start.isoformat()}..{self._series.end.isoformat()})")
        return got
