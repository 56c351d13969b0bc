"""A carbon-intensity metric the admin already has in Prometheus (``timing.carbon.prometheusQuery``),
read with prometheus-api-client. Prometheus holds only the past: the feed forecasts from it."""

from __future__ import annotations

from datetime import datetime, timedelta

from prometheus_api_client import PrometheusApiClientException, PrometheusConnect

from gensched.timing.series import Series, series_from_points
from gensched.timing.sources.base import SignalError


class PrometheusSource:
    has_forecast = False

    def __init__(self, url: str, query: str, step: timedelta = timedelta(minutes=30), timeout: float = 10.0) -> None:
        self.query = query
        self.step = step
        self.prom = PrometheusConnect(url=url, disable_ssl=True, timeout=int(max(1, timeout)))
        self.name = f"Prometheus {query}"

    def fetch(self, start: datetime, end: datetime) -> Series:
        stop = min(end, datetime.now(start.tzinfo))
        try:
            result = self.prom.custom_query_range(self.query, start_time=start, end_time=stop,
                                                  step=f"{int(self.step.total_seconds())}s")
        except (PrometheusApiClientException, OSError, ValueError) as exc:
            raise SignalError(f"{self.name}: query failed: {exc}") from exc
        except Exception as exc:  # requests errors surface as their own types
            raise SignalError(f"{self.name}: cannot query Prometheus: {exc.__class__.__name__}") from exc
        if not result:
            raise SignalError(f"{self.name}: no series returned: check timing.carbon.prometheusQuery")
        values = result[0].get("values") or []
        points = [(datetime.fromtimestamp(float(t), tz=start.tzinfo), float(v)) for t, v in values]
        if not points:
            raise SignalError(f"{self.name}: the series has no samples in the window")
        return series_from_points(points, self.step)
