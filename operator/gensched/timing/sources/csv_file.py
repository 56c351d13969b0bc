"""Recorded carbon intensity from CSV: the ``Time,Carbon Intensity`` files of "Let's Wait
Awhile" and the Electricity Maps hourly export (``Datetime (UTC)``, ``Carbon Intensity
gCO₂eq/kWh (direct)`` / ``(LCA)``)."""

from __future__ import annotations

import csv
import itertools
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from gensched.timing.series import Series, as_utc

EM_TIME = "Datetime (UTC)"
EM_DIRECT = "Carbon Intensity gCO₂eq/kWh (direct)"
EM_LCA = "Carbon Intensity gCO₂eq/kWh (LCA)"


class SignalError(RuntimeError):
    """A carbon signal could not be read; the message names the source and what to fix."""


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
    step = min(b - a for a, b in itertools.pairwise(times))
    if step <= timedelta(0):
        raise SignalError(f"{p}: times must increase")
    n = round((times[-1] - times[0]) / step) + 1
    out = np.full(n, np.nan)
    for t, v in zip(times, vals, strict=True):
        out[round((t - times[0]) / step)] = v
    missing = np.isnan(out)
    if missing.any():  # forward fill
        idx = np.where(~missing, np.arange(n), 0)
        np.maximum.accumulate(idx, out=idx)
        out = out[idx]
    return Series(times[0], step, out)
