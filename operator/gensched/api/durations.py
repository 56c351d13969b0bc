"""Go-style durations (``90m``, ``1h30m``, ``2d``) and RFC 3339 instants used by the specs.

Every duration and deadline is bounded so that date arithmetic on it can never overflow:
:data:`MAX_DURATION` for any duration at all, and tighter per-field limits (:data:`MAX_JOB_SPAN`
for deadlines, run times, deferral and safety margins) checked by :func:`check_duration`.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from gensched.api.errors import show

MAX_DURATION = timedelta(days=3660)  # ten years: nothing gensched plans reaches further
MAX_JOB_SPAN = timedelta(days=366)  # deadlines, estimatedDuration, maxDeferral, safetyMargin
EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)  # instants gensched plans on lie in this range,
LATEST_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)  # far from datetime.min/max: arithmetic cannot overflow

_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(d|h|m|s))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(d|h|m|s)")
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(d|h|m|s))+$"


def _seconds(text: str) -> float:
    """Seconds in ``1h30m``-style text (``inf`` when too large for a float), or ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"{show(text)} is not a duration: use a string like '45m', '8h' or '1d2h'")
    text = text.strip()
    if len(text) > 64:
        raise ValueError(f"{show(text)} is too long for a duration (at most 64 characters, e.g. '1d2h')")
    if not text or not _DURATION.match(text):
        raise ValueError(f"{show(text)} is not a duration: use forms like '45m', '8h' or '1d2h'")
    return sum(float(n) * _UNIT[u] for n, u in _PART.findall(text))


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style text; raises ValueError with the accepted form, and for anything
    longer than :data:`MAX_DURATION` (so no caller's date arithmetic can overflow)."""
    seconds = _seconds(text)
    if not math.isfinite(seconds) or seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{show(text.strip())} is longer than the longest duration gensched accepts "
                         f"({format_duration(MAX_DURATION)})")
    return timedelta(seconds=seconds)


def check_duration(text: str, maximum: timedelta, field: str, minimum: timedelta | None = None) -> timedelta:
    """Parse ``text`` and refuse it outside ``[minimum, maximum]`` with a message naming ``field``
    and the allowed range (validators call this so each limit is stated in one place)."""
    seconds = _seconds(text)
    if not math.isfinite(seconds) or seconds > maximum.total_seconds():
        raise ValueError(f"{field} {show(text.strip())} is longer than the maximum {format_duration(maximum)}: "
                         f"use at most {format_duration(maximum)}")
    if minimum is not None and seconds < minimum.total_seconds():
        raise ValueError(f"{field} {show(text.strip())} is shorter than the minimum {format_duration(minimum)}: "
                         f"use at least {format_duration(minimum)}")
    return parse_duration(text)


def format_duration(delta: timedelta) -> str:
    """Compact inverse of parse_duration (whole seconds)."""
    total = int(delta.total_seconds())
    if total == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def parse_instant(text: str) -> datetime:
    """Parse an RFC 3339 time; naive times are rejected since they are ambiguous."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{show(text)} is not an RFC 3339 time such as '2026-01-31T18:00:00Z'") from exc
    if value.tzinfo is None:
        raise ValueError(f"{show(text)} has no timezone: add 'Z' or an offset like '+01:00'")
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00:00+01:00 and the like
        raise ValueError(f"{show(text)} is out of the range of dates gensched handles") from exc


def resolve_deadline(text: str, created: datetime) -> datetime:
    """A deadline is either an RFC 3339 time (1970..9000) or a duration counted from ``created``
    (at most :data:`MAX_JOB_SPAN`), so planning on it cannot overflow. How far ahead an RFC 3339
    deadline may be is checked by the spec's validator (against the current time)."""
    if not isinstance(text, str):
        raise ValueError(f"{show(text)} is not a deadline: use a duration ('12h') or an RFC 3339 time")
    if _DURATION.match(text.strip()):
        return created + check_duration(text, MAX_JOB_SPAN, "batch.deadline")
    if re.match(r"^\d{4}-\d{2}-\d{2}", text.strip()):
        value = parse_instant(text)  # its own error says what is wrong with the time
        if not EARLIEST_INSTANT <= value < LATEST_INSTANT:
            raise ValueError(f"{show(text.strip())} is not a plausible deadline (years 1970 to 8999): check the year")
        return value
    raise ValueError(f"{show(text)} is neither a duration ('12h') nor an RFC 3339 time ('2026-01-31T18:00:00Z')")


def rfc3339(value: datetime) -> str:
    """Kubernetes-style timestamp (UTC, seconds, trailing Z)."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
