"""The Prometheus carbon provider against a real Prometheus holding three days of backfilled history."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from gensched.api.policy import CarbonSpec
from gensched.timing.sources.base import SignalError
from gensched.timing.sources.factory import build_feed
from gensched.timing.sources.prometheus import PrometheusSource
from tests.harness.prometheus import PrometheusServer


def daily(t: datetime) -> float:
    return 250 + 120 * math.cos(2 * math.pi * (t.hour + t.minute / 60) / 24)


def test_prometheus_history_feeds_a_seasonal_forecast(prometheus_server: Callable[..., PrometheusServer]) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(days=3)
    lines = ["# HELP grid_carbon_intensity gCO2/kWh of the local grid", "# TYPE grid_carbon_intensity gauge"]
    t = start
    while t < now - timedelta(hours=3):  # leave the head block alone: backfill must stay behind it
        lines.append(f'grid_carbon_intensity{{zone="DE"}} {daily(t):.2f} {int(t.timestamp())}')
        t += timedelta(minutes=5)
    prom = prometheus_server(backfill="\n".join(lines) + "\n")
    query = 'grid_carbon_intensity{zone="DE"}'
    series = PrometheusSource(prom.url, query).fetch(start, now)
    assert series.step == timedelta(minutes=30) and len(series) >= 48 * 2
    mid = start + timedelta(days=1, hours=7)
    assert series.value_at(mid) == pytest.approx(daily(series.time_at(series.index_at(mid))), abs=15)

    spec = CarbonSpec.model_validate({"provider": "Prometheus", "prometheusQuery": query, "endpoint": prom.url})
    feed = build_feed(spec, lambda n, k: None)
    ask_at = now - timedelta(hours=3, minutes=30)  # the last backfilled hour
    got = feed.get(ask_at, ask_at + timedelta(hours=24))
    assert got.forecast is not None and got.degraded is None and "seasonal forecast" in got.origin
    for k in range(1, len(got.forecast)):
        assert got.forecast.values[k] == pytest.approx(daily(got.forecast.time_at(k)), abs=30)

    with pytest.raises(SignalError, match="no series returned"):
        PrometheusSource(prom.url, "no_such_metric").fetch(start, now)
    prom.stop()
    with pytest.raises(SignalError, match="Prometheus"):
        PrometheusSource(prom.url, query, timeout=2).fetch(start, now)
