"""The public GB Carbon Intensity API (api.carbonintensity.org.uk): national or regional,
half-hourly, with its 48-hour forecast. No key needed.

National: ``GET /intensity/{from}/fw48h`` -> ``{"data": [{"from", "to", "intensity":
{"forecast", "actual", "index"}}]}``. Regional (``region`` = region id 1-17):
``GET /regional/intensity/{from}/fw48h/regionid/{id}`` -> ``{"data": [{"regionid", ...,
"data": [{"from", "to", "intensity": {"forecast", "index"}}]}]}`` (regional values are
forecasts only). Past windows use ``/intensity/{from}/{to}``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from gensched.api.durations import parse_instant
from gensched.timing.series import Series, as_utc, series_from_points
from gensched.timing.sources.base import SignalError
from gensched.timing.sources.http import get_json

DEFAULT_URL = "https://api.carbonintensity.org.uk"
STEP = timedelta(minutes=30)


def _iso(t: datetime) -> str:
    return as_utc(t).strftime("%Y-%m-%dT%H:%MZ")


class GBCarbonIntensitySource:
    has_forecast = True

    def __init__(self, region: str | None = None, endpoint: str | None = None, timeout: float = 10.0) -> None:
        if region is not None and not (region.isdigit() and 1 <= int(region) <= 17):
            raise SignalError(f"GBCarbonIntensity: timing.carbon.region {region!r} is not a region id 1-17 "
                              "(leave it empty for national data)")
        self.region = region
        self.url = (endpoint or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self.name = f"GBCarbonIntensity {'region ' + region if region else 'national'}"

    def fetch(self, start: datetime, end: datetime) -> Series:
        points: list[tuple[datetime, float]] = []
        t = as_utc(start)
        while t < end:  # the API serves at most 48 h (forward) or 14 days (range) per call
            if self.region:
                path = f"/regional/intensity/{_iso(t)}/fw48h/regionid/{self.region}"
            else:
                path = f"/intensity/{_iso(t)}/fw48h"
            body = get_json(self.name, self.url + path, timeout=self.timeout)
            got = self._points(body)
            if not got:
                break
            points += got
            last = max(p[0] for p in got)
            if last + STEP <= t:
                break
            t = last + STEP
        if not points:
            raise SignalError(f"{self.name}: no data for {_iso(start)}..{_iso(end)}")
        return series_from_points(points, STEP)

    def _points(self, body: Any) -> list[tuple[datetime, float]]:
        try:
            data = body["data"]
            if self.region:
                data = (data[0] if isinstance(data, list) else data)["data"]
            out = []
            for row in data:
                it = row["intensity"]
                value = it.get("actual") if it.get("actual") is not None else it.get("forecast")
                if value is not None:
                    out.append((parse_instant(row["from"]), float(value)))
            return out
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise SignalError(f"{self.name}: unexpected response shape ({exc.__class__.__name__}: {exc})") from exc
