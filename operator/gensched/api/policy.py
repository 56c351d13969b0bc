"""SchedulingPolicy: how an admin tunes packing, time shifting and autoscaling.

The schema and defaults live here; the packing/timing/autoscale issues give the
fields their full behaviour (see docs/configuration.md for what is live).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from gensched.api.base import KubeModel
from gensched.api.durations import DURATION_PATTERN

HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class PackingStrategy(StrEnum):
    FIRST_FIT = "FirstFit"
    BEST_FIT = "BestFit"
    GPU_PACKING = "GpuPacking"
    FGD = "FGD"
    GENSCHED = "Gensched"


class TimingMode(StrEnum):
    IMMEDIATE = "Immediate"
    OFF_PEAK = "OffPeak"
    CARBON_AWARE = "CarbonAware"


class Weekday(StrEnum):
    MON = "Mon"
    TUE = "Tue"
    WED = "Wed"
    THU = "Thu"
    FRI = "Fri"
    SAT = "Sat"
    SUN = "Sun"


class CarbonProvider(StrEnum):
    CSV = "CSV"
    GB_CARBON_INTENSITY = "GBCarbonIntensity"
    ELECTRICITY_MAPS = "ElectricityMaps"
    WATT_TIME = "WattTime"
    PROMETHEUS = "Prometheus"


class Granularity(StrEnum):
    OPERATOR = "Operator"
    MODEL = "Model"


class PackingSpec(KubeModel):
    strategy: PackingStrategy = Field(
        default=PackingStrategy.GENSCHED,
        description="Placement policy: Gensched (fragmentation-aware, default), FGD, GpuPacking, BestFit, FirstFit.",
    )


class OffPeakWindow(KubeModel):
    """A recurring cheap (or clean) window, local to ``timezone``."""

    days: list[Weekday] = Field(
        default_factory=lambda: list(Weekday), min_length=1, description="Days the window starts on."
    )
    start: str = Field(pattern=HHMM.pattern, description="Local start time HH:MM.")
    end: str = Field(pattern=HHMM.pattern, description="Local end time HH:MM; before start means next day.")
    timezone: str = Field(default="UTC", description="IANA timezone, e.g. Europe/Berlin.")
    price_per_kwh: float | None = Field(default=None, ge=0, description="Electricity price in the window.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {v!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'") from exc
        return v

    @model_validator(mode="after")
    def _non_empty(self) -> OffPeakWindow:
        if self.start == self.end:
            raise ValueError(f"window {self.start}-{self.end} is empty: end must differ from start")
        return self


class SecretKeyRef(KubeModel):
    name: str = Field(description="Secret in the operator's namespace.")
    key: str = Field(description="Key inside the Secret.")


class CarbonSpec(KubeModel):
    provider: CarbonProvider = CarbonProvider.CSV
    region: str | None = Field(default=None, description="Grid region / zone code of the provider.")
    csv_path: str | None = Field(default=None, description="CSV file (provider CSV), readable by the operator.")
    prometheus_query: str | None = Field(default=None, description="PromQL returning gCO2/kWh (provider Prometheus).")
    secret_ref: SecretKeyRef | None = Field(default=None, description="API token or login, never inline.")


class TimingSpec(KubeModel):
    x_kubernetes_validations: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.mode != 'OffPeak' || size(self.offPeakWindows) > 0",
         "message": "timing.offPeakWindows needs at least one window when timing.mode is OffPeak"},
    ]

    mode: TimingMode = Field(default=TimingMode.IMMEDIATE, description="When batch work starts.")
    max_deferral: str = Field(default="24h", pattern=DURATION_PATTERN, description="Longest a job is held back.")
    safety_margin: str = Field(
        default="30m", pattern=DURATION_PATTERN, description="Slack kept before a deadline."
    )
    off_peak_windows: list[OffPeakWindow] = Field(default_factory=list)
    carbon: CarbonSpec | None = None

    @model_validator(mode="after")
    def _windows_for_offpeak(self) -> TimingSpec:
        if self.mode == TimingMode.OFF_PEAK and not self.off_peak_windows:
            raise ValueError("timing.mode is OffPeak but timing.offPeakWindows is empty: add a window")
        return self


class AutoscalingSpec(KubeModel):
    granularity: Granularity = Field(
        default=Granularity.OPERATOR, description="Scale per model operator or whole model."
    )
    interval_seconds: int = Field(default=30, ge=5, le=3600, description="How often replicas are re-decided.")
    cooldown_seconds: int = Field(default=60, ge=0, le=86400, description="Minimum time between two changes.")
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=86400, description="Load must stay low this long before scaling down."
    )
    prometheus_url: str | None = Field(default=None, description="Prometheus base URL for serving metrics.")


class SchedulingPolicySpec(KubeModel):
    default: bool = Field(default=False, description="Applies to jobs without spec.policyRef.")
    packing: PackingSpec = Field(default_factory=PackingSpec)
    timing: TimingSpec = Field(default_factory=TimingSpec)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)


class SchedulingPolicy(KubeModel):
    model_config = KubeModel.model_config | {"extra": "ignore"}

    api_version: str = "gensched.io/v1alpha1"
    kind: str = "SchedulingPolicy"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: SchedulingPolicySpec = Field(default_factory=SchedulingPolicySpec)
