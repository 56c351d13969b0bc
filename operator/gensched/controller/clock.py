"""The operator's clock. Real time by default; for demos and tests it can start at a given
instant and run faster (``GENSCHED_CLOCK_START`` RFC 3339, ``GENSCHED_CLOCK_RATE`` simulated
seconds per real second) so a recorded carbon series can be replayed through the real operator."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from gensched.api.durations import parse_instant

_START = os.environ.get("GENSCHED_CLOCK_START")
_RATE = float(os.environ.get("GENSCHED_CLOCK_RATE", "1"))
_ORIGIN = time.monotonic()
_BASE = parse_instant(_START) if _START else None


def now() -> datetime:
    if _BASE is None and _RATE == 1:
        return datetime.now(UTC)
    base = _BASE or datetime.now(UTC)
    return base + timedelta(seconds=(time.monotonic() - _ORIGIN) * _RATE)


def real_seconds(simulated: timedelta) -> float:
    """How long to wait in real time for ``simulated`` to pass on this clock."""
    return simulated.total_seconds() / _RATE
