"""Go-style durations (``90m``, ``1h30m``, ``2d``) and RFC 3339 instants used by the specs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(d|h|m|s))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(d|h|m|s)")
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(d|h|m|s))+$"


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style text; raises ValueError with the accepted form."""
    text = text.strip()
    if not text or not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration: use forms like '45m', '8h' or '1d2h'")
    seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(text))
    return timedelta(seconds=seconds)


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
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as '2026-01-31T18:00:00Z'") from exc
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone: add 'Z' or an offset like '+01:00'")
    return value.astimezone(UTC)


def resolve_deadline(text: str, created: datetime) -> datetime:
    """A deadline is either an RFC 3339 time or a duration counted from ``created``."""
    if _DURATION.match(text.strip()):
        return created + parse_duration(text)
    if re.match(r"^\d{4}-\d{2}-\d{2}", text.strip()):
        return parse_instant(text)  # its own error says what is wrong with the time
    raise ValueError(f"{text!r} is neither a duration ('12h') nor an RFC 3339 time ('2026-01-31T18:00:00Z')")


def rfc3339(value: datetime) -> str:
    """Kubernetes-style timestamp (UTC, seconds, trailing Z)."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
