"""WattTime API v3: log in with HTTP basic auth for a bearer token (valid 30 minutes), then
``GET /v3/forecast?region=R&signal_type=co2_moer`` -> ``{"data": [{"point_time", "value"}],
"meta": {"units": "lbs_co2_per_mwh", "data_point_period_seconds", ...}}`` and
``GET /v3/historical`` for the past. Values are marginal emissions in lb/MWh, converted to g/kWh.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from gensched.api.durations import parse_instant
from gensched.timing.series import Series, as_utc, series_from_points
from gensched.timing.sources.base import SignalError
from gensched.timing.sources.http import get_json

DEFAULT_URL = "https://api.watttime.org"
LB_PER_MWH_TO_G_PER_KWH = 0.45359237
TOKEN_LIFETIME_S = 25 * 60  # tokens last 30 minutes; renew early


class WattTimeSource:
    has_forecast = True

    def __init__(self, region: str, username: str, password: str, endpoint: str | None = None,
                 timeout: float = 10.0, signal_type: str = "co2_moer") -> None:
        self.region = region
        self.login = (username, password)
        self.url = (endpoint or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self.signal_type = signal_type
        self.name = f"WattTime {region}"
        self._token: tuple[str, float] | None = None

    def _bearer(self) -> dict[str, str]:
        if self._token is None or time.monotonic() - self._token[1] > TOKEN_LIFETIME_S:
            body = get_json(self.name, f"{self.url}/login", auth=self.login, timeout=self.timeout)
            if not isinstance(body, dict) or "token" not in body:
                raise SignalError(f"{self.name}: login answered without a token: check the Secret")
            self._token = (str(body["token"]), time.monotonic())
        return {"Authorization": f"Bearer {self._token[0]}"}

    def fetch(self, start: datetime, end: datetime) -> Series:
        points: list[tuple[datetime, float]] = []
        now = datetime.now(tz=as_utc(start).tzinfo)
        if start < now:
            past = get_json(self.name, f"{self.url}/v3/historical", headers=self._bearer(), timeout=self.timeout,
                            params={"region": self.region, "signal_type": self.signal_type,
                                    "start": as_utc(start).isoformat(), "end": as_utc(min(now, end)).isoformat()})
            points += self._points(past)
        fc = get_json(self.name, f"{self.url}/v3/forecast", headers=self._bearer(), timeout=self.timeout,
                      params={"region": self.region, "signal_type": self.signal_type})
        points += self._points(fc)
        points = [p for p in points if start - timedelta(hours=1) <= p[0] < end]
        if not points:
            raise SignalError(f"{self.name}: no data for the planning window")
        return series_from_points(points)

    def _points(self, body: Any) -> list[tuple[datetime, float]]:
        try:
            units = body.get("meta", {}).get("units", "lbs_co2_per_mwh")
            scale = LB_PER_MWH_TO_G_PER_KWH if units.startswith("lbs") else 1.0
            return [(parse_instant(r["point_time"]), float(r["value"]) * scale)
                    for r in body["data"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SignalError(f"{self.name}: unexpected response ({exc.__class__.__name__}: {exc})") from exc
