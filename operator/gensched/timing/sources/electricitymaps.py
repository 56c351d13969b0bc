"""Electricity Maps API v3 (token in the ``auth-token`` header).

``GET /v3/carbon-intensity/history?zone=Z`` (last 24 h) and ``GET
/v3/carbon-intensity/forecast?zone=Z`` -> ``{"zone", "history"|"forecast":
[{"carbonIntensity", "datetime"}]}``; errors are ``{"status": "error", "message"}``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from gensched.api.durations import parse_instant
from gensched.timing.series import Series, series_from_points
from gensched.timing.sources.base import SignalError
from gensched.timing.sources.http import get_json

DEFAULT_URL = "https://api.electricitymap.org"


class ElectricityMapsSource:
    has_forecast = True

    def __init__(self, zone: str, token: str, endpoint: str | None = None, timeout: float = 10.0) -> None:
        self.zone = zone
        self.token = token
        self.url = (endpoint or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self.name = f"ElectricityMaps {zone}"

    def fetch(self, start: datetime, end: datetime) -> Series:
        points: list[tuple[datetime, float]] = []
        for kind in ("history", "forecast"):
            body = get_json(self.name, f"{self.url}/v3/carbon-intensity/{kind}", params={"zone": self.zone},
                            headers={"auth-token": self.token}, timeout=self.timeout)
            points += self._points(body, kind)
        points = [p for p in points if start - timedelta(hours=1) <= p[0] < end]
        if not points:
            raise SignalError(f"{self.name}: no data for the planning window")
        return series_from_points(points)

    def _points(self, body: Any, kind: str) -> list[tuple[datetime, float]]:
        try:
            return [(parse_instant(r["datetime"]), float(r["carbonIntensity"]))
                    for r in body[kind] if r.get("carbonIntensity") is not None]
        except (KeyError, TypeError, ValueError) as exc:
            raise SignalError(f"{self.name}: unexpected {kind} response ({exc.__class__.__name__}: {exc})") from exc
