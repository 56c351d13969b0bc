"""Build the provider a SchedulingPolicy names. Secrets come through ``read_secret`` (the
controller reads the Kubernetes Secret); they never appear in the CRD. CSV files are read only
inside the admin's carbon CSV directory (``csv_dir``, default ``$GENSCHED_CARBON_CSV_DIR``;
unset: the CSV provider is refused), see :mod:`gensched.timing.sources.csv_file`."""

from __future__ import annotations

import os
from collections.abc import Callable

from gensched.api.durations import parse_duration
from gensched.api.policy import CarbonProvider, CarbonSpec, Forecaster
from gensched.timing.sources.base import CarbonSource, SignalError
from gensched.timing.sources.csv_file import CSV_DIR_ENV, CsvSource
from gensched.timing.sources.feed import SignalFeed

SecretReader = Callable[[str, str], str | None]  # (secret name, key) -> value


def build_source(spec: CarbonSpec, read_secret: SecretReader, csv_dir: str | None = None) -> CarbonSource:
    """The provider of ``spec``; raises SignalError naming what to fix when it cannot be built."""
    p = spec.provider
    if p == CarbonProvider.CSV:
        if not spec.csv_path:
            raise SignalError("timing.carbon.provider is CSV but timing.carbon.csvPath is missing: add the file path")
        return CsvSource(spec.csv_path, root=csv_dir if csv_dir is not None else os.environ.get(CSV_DIR_ENV, ""))
    if p == CarbonProvider.GB_CARBON_INTENSITY:
        from gensched.timing.sources.gb import GBCarbonIntensitySource

        return GBCarbonIntensitySource(spec.region, spec.endpoint, spec.timeout_seconds)
    if p == CarbonProvider.PROMETHEUS:
        from gensched.timing.sources.prometheus import PrometheusSource

        assert spec.endpoint and spec.prometheus_query
        return PrometheusSource(spec.endpoint, spec.prometheus_query, timeout=spec.timeout_seconds)
    secret = _secret(spec, read_secret)
    assert spec.region
    if p == CarbonProvider.ELECTRICITY_MAPS:
        from gensched.timing.sources.electricitymaps import ElectricityMapsSource

        return ElectricityMapsSource(spec.region, secret, spec.endpoint, spec.timeout_seconds)
    from gensched.timing.sources.watttime import WattTimeSource

    user, sep, password = secret.partition(":")
    if not sep:
        raise SignalError("WattTime: the Secret value must be 'username:password'")
    return WattTimeSource(spec.region, user, password, spec.endpoint, spec.timeout_seconds)


def _secret(spec: CarbonSpec, read_secret: SecretReader) -> str:
    ref = spec.secret_ref
    assert ref is not None
    value = read_secret(ref.name, ref.key)
    if not value:
        raise SignalError(f"Secret {ref.name!r} (key {ref.key!r}) named by timing.carbon.secretRef is missing "
                          "in the operator's namespace: create it")
    return value.strip()


def build_feed(spec: CarbonSpec, read_secret: SecretReader, csv_dir: str | None = None) -> SignalFeed:
    return SignalFeed(build_source(spec, read_secret, csv_dir), history_forecast=spec.forecaster == Forecaster.HISTORY,
                      refresh=parse_duration(spec.refresh), max_age=parse_duration(spec.max_age))


__all__ = ["SecretReader", "build_feed", "build_source"]
