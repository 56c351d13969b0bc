"""Carbon providers against a local server speaking each real API's schema, and the fallback feed."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gensched.api.policy import CarbonSpec
from gensched.timing.sources.base import SignalError
from gensched.timing.sources.electricitymaps import ElectricityMapsSource
from gensched.timing.sources.factory import build_feed, build_source
from gensched.timing.sources.feed import SignalFeed
from gensched.timing.sources.gb import GBCarbonIntensitySource
from gensched.timing.sources.watttime import WattTimeSource
from tests.harness.carbon_api import TOKEN, WT_PASSWORD, WT_USER, CarbonAPI

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def daily(t: datetime) -> float:
    return 200 + 100 * math.sin(2 * math.pi * (t.hour + t.minute / 60) / 24)


@pytest.fixture
def api() -> Iterator[CarbonAPI]:
    with CarbonAPI(daily, lambda: NOW) as a:
        yield a


def test_gb_national_and_regional(api: CarbonAPI) -> None:
    s = GBCarbonIntensitySource(None, api.url).fetch(NOW, NOW + timedelta(hours=60))
    assert s.step == timedelta(minutes=30) and s.end >= NOW + timedelta(hours=60)  # two 48 h pages
    t = NOW + timedelta(hours=5)
    assert s.value_at(t) == pytest.approx(daily(s.time_at(s.index_at(t))), abs=1)
    r = GBCarbonIntensitySource("13", api.url).fetch(NOW, NOW + timedelta(hours=24))
    assert len(r) >= 48 and any("/regionid/13" in c for c in api.calls)
    with pytest.raises(SignalError, match="region id 1-17"):
        GBCarbonIntensitySource("London", api.url)


def test_electricity_maps_token_and_schema(api: CarbonAPI) -> None:
    s = ElectricityMapsSource("DE", TOKEN, api.url).fetch(NOW - timedelta(hours=2), NOW + timedelta(hours=48))
    assert s.step == timedelta(hours=1) and s.end >= NOW + timedelta(hours=47)
    with pytest.raises(SignalError, match="secretRef"):
        ElectricityMapsSource("DE", "wrong", api.url).fetch(NOW, NOW + timedelta(hours=4))


def test_watttime_login_and_unit_conversion(api: CarbonAPI) -> None:
    src = WattTimeSource("CAISO_NORTH", WT_USER, WT_PASSWORD, api.url)
    s = src.fetch(NOW - timedelta(hours=1), NOW + timedelta(hours=12))
    assert s.step == timedelta(minutes=5)
    t = NOW + timedelta(hours=3)
    assert s.value_at(t) == pytest.approx(daily(s.time_at(s.index_at(t))), rel=1e-6)  # lb/MWh -> g/kWh
    src.fetch(NOW, NOW + timedelta(hours=1))
    assert sum(c == "/login" for c in api.calls) == 1  # token reused
    with pytest.raises(SignalError, match="refused the credentials"):
        WattTimeSource("CAISO_NORTH", WT_USER, "nope", api.url).fetch(NOW, NOW + timedelta(hours=1))


@pytest.mark.parametrize(("mode", "message"), [
    ("error", "HTTP 500"), ("unauthorized", "refused the credentials"), ("garbage", "did not return JSON"),
    ("slow", "within 0.5s"), ("empty", "no data"),
])
def test_every_failure_is_a_signal_error_naming_the_provider(api: CarbonAPI, mode: str, message: str) -> None:
    api.mode, api.delay = mode, 2.0
    sources = (GBCarbonIntensitySource(None, api.url, timeout=0.5), ElectricityMapsSource("DE", TOKEN, api.url, 0.5),
               WattTimeSource("CAISO_NORTH", WT_USER, WT_PASSWORD, api.url, timeout=0.5))
    for src in sources:
        with pytest.raises(SignalError, match=message) as info:
            src.fetch(NOW, NOW + timedelta(hours=6))
        assert src.name in str(info.value)


def test_feed_falls_back_to_cache_then_to_nothing(api: CarbonAPI) -> None:
    feed = SignalFeed(GBCarbonIntensitySource(None, api.url), refresh=timedelta(minutes=15),
                      max_age=timedelta(hours=2))
    ok = feed.get(NOW, NOW + timedelta(hours=24))
    assert ok.forecast is not None and ok.degraded is None and ok.forecast.index_at(NOW) == 0
    api.mode = "error"
    calls = len(api.calls)
    assert feed.get(NOW + timedelta(minutes=5), NOW + timedelta(hours=24)).degraded is None  # fresh cache: no call
    assert len(api.calls) == calls
    cached = feed.get(NOW + timedelta(hours=1), NOW + timedelta(hours=24))
    assert cached.forecast is not None and "HTTP 500" in (cached.degraded or "") and "fetched 60 min ago" in (
        cached.degraded or "")
    gone = feed.get(NOW + timedelta(hours=3), NOW + timedelta(hours=24))
    assert gone.forecast is None and "HTTP 500" in (gone.degraded or "")


def test_feed_forecasts_from_history_when_told(tmp_path: Path) -> None:
    csv = tmp_path / "ci.csv"
    start = datetime(2020, 1, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=30 * i) for i in range(48 * 40)]
    rows = [f"{t.strftime('%Y-%m-%d %H:%M:%S')},{daily(t):.3f}" for t in times]
    csv.write_text("Time,Carbon Intensity\n" + "\n".join(rows) + "\n")
    spec = CarbonSpec.model_validate({"provider": "CSV", "csvPath": str(csv), "forecaster": "History"})
    now = start + timedelta(days=35, hours=3)
    fc = build_feed(spec, lambda n, k: None, csv_dir=str(tmp_path)).get(now, now + timedelta(hours=24)).forecast
    assert fc is not None and len(fc) >= 48
    truth = [daily(fc.time_at(i)) for i in range(len(fc))]
    assert max(abs(a - b) for a, b in zip(fc.values, truth, strict=True)) < 5  # learned the daily shape
    stale = build_feed(spec, lambda n, k: None, csv_dir=str(tmp_path)).get(start + timedelta(days=60),
                                                                           start + timedelta(days=61))
    assert stale.forecast is None and "stale signal" in (stale.degraded or "")


def test_factory_reads_secrets_and_names_the_missing_one() -> None:
    spec = CarbonSpec.model_validate({"provider": "ElectricityMaps", "region": "DE",
                                      "secretRef": {"name": "em", "key": "token"}})
    assert isinstance(build_source(spec, lambda n, k: TOKEN if (n, k) == ("em", "token") else None),
                      ElectricityMapsSource)
    with pytest.raises(SignalError, match="Secret 'em'"):
        build_source(spec, lambda n, k: None)
    wt = CarbonSpec.model_validate({"provider": "WattTime", "region": "CAISO_NORTH",
                                    "secretRef": {"name": "wt", "key": "login"}})
    with pytest.raises(SignalError, match="username:password"):
        build_source(wt, lambda n, k: "no-colon")
    with pytest.raises(ValueError, match="secretRef"):
        CarbonSpec.model_validate({"provider": "WattTime", "region": "CAISO_NORTH"})
