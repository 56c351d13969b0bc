"""The operator's clock. Real time by default. For demos and tests it can be replaced:

- ``GENSCHED_CLOCK_START`` (RFC 3339) and ``GENSCHED_CLOCK_RATE`` (simulated seconds per real second): a
  clock that starts at a given instant and runs faster, so a recorded carbon series replays in minutes;
- ``GENSCHED_CLOCK_FILE``: a clock driven from outside. The file holds an RFC 3339 instant and optionally a
  rate (``2026-03-03T02:00:00Z 0`` = stopped there; ``... 900`` = running 900x from when the file was
  written). Tests step it, so no assertion depends on how fast the machine is.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from gensched.api.durations import parse_instant

_START = os.environ.get("GENSCHED_CLOCK_START")
_RATE = float(os.environ.get("GENSCHED_CLOCK_RATE", "1"))
_FILE = os.environ.get("GENSCHED_CLOCK_FILE")
_ORIGIN = time.monotonic()
_BASE = parse_instant(_START) if _START else None
_read: tuple[float, datetime, float] | None = None  # (file mtime, instant, rate)


def _from_file(path: str) -> datetime:
    global _read
    mtime = os.stat(path).st_mtime
    if _read is None or _read[0] != mtime:
        parts = open(path).read().split()  # noqa: SIM115
        _read = (mtime, parse_instant(parts[0]), float(parts[1]) if len(parts) > 1 else 0.0)
    _, instant, rate = _read
    return instant + timedelta(seconds=max(0.0, time.time() - mtime) * rate)


def now() -> datetime:
    if _FILE:
        return _from_file(_FILE)
    if _BASE is None and _RATE == 1:
        return datetime.now(UTC)
    base = _BASE or datetime.now(UTC)
    return base + timedelta(seconds=(time.monotonic() - _ORIGIN) * _RATE)


def real_seconds(simulated: timedelta) -> float:
    """How long to wait in real time for ``simulated`` to pass on this clock."""
    if _FILE:
        return 1.0  # driven from outside: look again soon
    return simulated.total_seconds() / _RATE
