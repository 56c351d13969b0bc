"""SchedulingPolicy: how an admin tunes packing, time shifting and autoscaling.

The schema and defaults live here; the packing/timing/autoscale issues give the
fields their full behaviour (see docs/configuration.md for what is live).
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from enum import StrEnum
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gensched.api.accounting import AccountingSpec, BudgetState, UsageRecord
from gensched.api.base import KubeModel
from gensched.api.conditions import Condition
from gensched.api.durations import DURATION_PATTERN, MAX_JOB_SPAN, check_duration
from gensched.api.errors import show

HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
# IANA names: letters, digits, _ + -, up to three '/' levels (America/Argentina/Buenos_Aires); no '.'
TIMEZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,3}$"
MAX_REFRESH = timedelta(hours=24)  # timing.carbon.refresh
MAX_SIGNAL_AGE = timedelta(days=30)  # timing.carbon.maxAge


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
    timezone: str = Field(default="UTC", max_length=64, pattern=TIMEZONE_PATTERN,
                          description="IANA timezone, e.g. Europe/Berlin (a zone, not a folder such as Europe).")
    price_per_kwh: float | None = Field(default=None, ge=0, description="Electricity price in the window.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        # ZoneInfo opens a file under the tz database: a folder ('Europe') raises IsADirectoryError,
        # an over-long name OSError, a non-zone file ValueError.
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown timezone {show(v)}: use an IANA name such as 'Europe/Berlin' or 'UTC'") from exc
        return v

    @model_validator(mode="after")
    def _non_empty(self) -> OffPeakWindow:
        if self.start == self.end:
            raise ValueError(f"window {self.start}-{self.end} is empty: end must differ from start")
        return self


class SecretKeyRef(KubeModel):
    name: str = Field(description="Secret in the operator's namespace.")
    key: str = Field(description="Key inside the Secret.")


class Forecaster(StrEnum):
    PROVIDER = "Provider"  # the provider's own forecast; history-based when it gives none
    HISTORY = "History"  # always forecast from the provider's past values (seasonal profile)


class Objective(StrEnum):
    EMISSIONS = "Emissions"
    COST = "Cost"
    WEIGHTED = "Weighted"


class CarbonSpec(KubeModel):
    x_kubernetes_validations: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.provider != 'CSV' || has(self.csvPath)",
         "message": "timing.carbon.csvPath is required when timing.carbon.provider is CSV"},
        {"rule": "self.provider != 'Prometheus' || has(self.prometheusQuery)",
         "message": "timing.carbon.prometheusQuery is required when timing.carbon.provider is Prometheus"},
    ]

    provider: CarbonProvider = Field(default=CarbonProvider.CSV, description="Where the carbon signal comes from.")
    region: str | None = Field(
        default=None,
        description="Grid region: GB region id 1-17 (none: national), Electricity Maps zone (DE), WattTime region.")
    csv_path: str | None = Field(
        default=None, description="CSV file (provider CSV) in the operator's carbon CSV directory (gensched run "
                                  "--carbon-csv-dir); a relative path is taken inside it, nothing outside is read.")
    prometheus_query: str | None = Field(default=None, description="PromQL returning gCO2/kWh (provider Prometheus).")
    endpoint: str | None = Field(
        default=None, description="Base URL override (a proxy or mirror); Prometheus: its URL (required).")
    secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret in the operator's namespace: Electricity Maps token, or WattTime "
                                  "'username:password'. Never inline.")
    forecaster: Forecaster = Field(
        default=Forecaster.PROVIDER, description="Provider: use the provider's forecast; History: seasonal "
                                                 "forecast from its past values (also used when it gives none).")
    refresh: str = Field(default="15m", pattern=DURATION_PATTERN,
                         description="How often the signal is fetched (at most 1d).")
    max_age: str = Field(default="6h", pattern=DURATION_PATTERN,
                         description="A cached forecast older than this is not used when the provider fails "
                                     "(at most 30d).")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="HTTP timeout per request.")

    @field_validator("refresh")
    @classmethod
    def _refresh_bounded(cls, v: str) -> str:
        check_duration(v, MAX_REFRESH, "timing.carbon.refresh")
        return v

    @field_validator("max_age")
    @classmethod
    def _max_age_bounded(cls, v: str) -> str:
        check_duration(v, MAX_SIGNAL_AGE, "timing.carbon.maxAge")
        return v

    @model_validator(mode="after")
    def _needs(self) -> CarbonSpec:
        if self.provider == CarbonProvider.CSV and not self.csv_path:
            raise ValueError("timing.carbon.provider is CSV but timing.carbon.csvPath is missing: add the file path")
        if self.provider == CarbonProvider.PROMETHEUS and not (self.prometheus_query and self.endpoint):
            raise ValueError("timing.carbon.provider is Prometheus: set timing.carbon.prometheusQuery and "
                             "timing.carbon.endpoint (the Prometheus URL)")
        if self.provider in (CarbonProvider.ELECTRICITY_MAPS, CarbonProvider.WATT_TIME) and not self.secret_ref:
            raise ValueError(f"timing.carbon.provider {self.provider} needs timing.carbon.secretRef "
                             "(a Secret holding the token or login)")
        if self.provider in (CarbonProvider.ELECTRICITY_MAPS, CarbonProvider.WATT_TIME) and not self.region:
            raise ValueError(f"timing.carbon.provider {self.provider} needs timing.carbon.region (zone or region)")
        return self


class TimingSpec(KubeModel):
    x_kubernetes_validations: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.mode != 'OffPeak' || size(self.offPeakWindows) > 0",
         "message": "timing.offPeakWindows needs at least one window when timing.mode is OffPeak"},
    ]

    mode: TimingMode = Field(default=TimingMode.IMMEDIATE, description="When batch work starts.")
    max_deferral: str = Field(default="24h", pattern=DURATION_PATTERN,
                              description="Longest a job is held back (at most 366d).")
    safety_margin: str = Field(
        default="30m", pattern=DURATION_PATTERN, description="Slack kept before a deadline (at most 366d)."
    )
    off_peak_windows: list[OffPeakWindow] = Field(
        default_factory=list, max_length=64, description="Off-peak windows (OffPeak mode; priced windows for Cost).")
    holidays: list[str] = Field(
        default_factory=list, max_length=1000,
        description="Dates (YYYY-MM-DD, in each window's timezone) treated as all off-peak.")
    carbon: CarbonSpec | None = Field(default=None, description="The carbon-intensity signal (CarbonAware mode).")
    objective: Objective = Field(
        default=Objective.EMISSIONS,
        description="CarbonAware: minimise Emissions, Cost (window prices), or a Weighted mix of both.")
    carbon_weight: float = Field(default=0.5, ge=0, le=1, description="Weighted: share of emissions in the mix.")
    default_price_per_kwh: float = Field(default=0.3, ge=0, description="Price outside priced windows.")
    smoothing_slots: int = Field(default=3, ge=1, le=12,
                                 description="Forecast smoothing (slots) before ranking; 1 turns it off.")
    gpu_utilization: float = Field(default=0.7, gt=0, le=1,
                                   description="Average GPU power draw as a share of TDP, for energy estimates.")

    @field_validator("max_deferral", "safety_margin")
    @classmethod
    def _span_bounded(cls, v: str, info: ValidationInfo) -> str:
        name = {"max_deferral": "maxDeferral", "safety_margin": "safetyMargin"}[info.field_name or ""]
        check_duration(v, MAX_JOB_SPAN, f"timing.{name}")
        return v

    @model_validator(mode="after")
    def _windows_for_offpeak(self) -> TimingSpec:
        if self.mode == TimingMode.OFF_PEAK and not self.off_peak_windows:
            raise ValueError("timing.mode is OffPeak but timing.offPeakWindows is empty: add a window")
        if self.mode == TimingMode.CARBON_AWARE and self.carbon is None:
            raise ValueError("timing.mode is CarbonAware but timing.carbon is missing: add a provider "
                             "(e.g. carbon: {provider: GBCarbonIntensity})")
        for i, w in enumerate(self.off_peak_windows):
            for j in range(i):
                if _overlap(self.off_peak_windows[j], w):
                    raise ValueError(f"timing.offPeakWindows[{j}] and [{i}] overlap on a day: merge them")
        for h in self.holidays:
            try:
                date.fromisoformat(h)
            except ValueError as exc:
                raise ValueError(f"timing.holidays entry {show(h)} is not a date: use YYYY-MM-DD") from exc
        return self


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _overlap(a: OffPeakWindow, b: OffPeakWindow) -> bool:
    """Two windows starting on a shared day with intersecting times (a likely copy-paste
    mistake). An overnight window spilling into the next day's window is allowed: that is how
    "weeknights plus weekends" is written, and the union is what counts."""
    if a.timezone != b.timezone or not set(a.days) & set(b.days):
        return False

    def span(w: OffPeakWindow) -> tuple[int, int]:
        s, e = _minutes(w.start), _minutes(w.end)
        return s, e if e > s else e + 1440

    (s1, e1), (s2, e2) = span(a), span(b)
    return s1 < e2 and s2 < e1


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
    target_ongoing_requests: float = Field(
        default=2.0, gt=0, le=1000,
        description="Requests in flight per replica a model operator is sized for (when no profile says more).")
    scale_up_step: int = Field(default=4, ge=1, le=100, description="Most replicas added to one operator at once.")


class QueueingSpec(KubeModel):
    """How the scheduling cycle orders, backfills and makes room (cluster-wide: read from every policy,
    the strictest setting wins)."""

    backfill: bool = Field(
        default=True,
        description="Let later jobs start when they cannot delay the head job's reserved start (EASY backfill).")
    preemption: bool = Field(
        default=True, description="A higher-priority job may suspend lower-priority interruptible batch jobs.")
    defragmentation: bool = Field(
        default=True,
        description="Move interruptible batch jobs (suspend, re-place) to open room for the head job.")
    max_preemptions_per_cycle: int = Field(default=4, ge=0, le=100,
                                           description="Most jobs suspended by one scheduling cycle.")
    max_moves_per_cycle: int = Field(default=2, ge=0, le=100,
                                     description="Most jobs moved by one scheduling cycle to defragment.")
    cycle_seconds: float = Field(default=2.0, ge=0.1, le=300,
                                 description="Longest time between two scheduling cycles (events wake it sooner).")


class NamespaceQuota(KubeModel):
    """GPU quota of one namespace; namespaces in one cohort may borrow each other's idle quota."""

    namespace: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63,
                           description="The namespace this quota binds.")
    max_gpus: float | None = Field(default=None, ge=0, le=100_000,
                                   description="GPUs its running jobs may hold at once (shares count as fractions).")
    max_gpu_hours: float | None = Field(default=None, ge=0, le=1e9,
                                        description="GPU-hours its jobs may start per period (estimated use).")
    period: str = Field(default="24h", pattern=DURATION_PATTERN,
                        description="Length of the GPU-hours accounting period, e.g. 24h or 7d.")
    cohort: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63,
                               description="Named group of namespaces that lend each other idle GPU quota.")
    borrowing: bool = Field(default=False,
                            description="May use idle maxGpus quota of other namespaces in its cohort.")


class SchedulingPolicySpec(KubeModel):
    """How an admin tunes packing, time shifting, queueing, quotas, autoscaling and accounting."""

    default: bool = Field(default=False, description="Applies to jobs without spec.policyRef.")
    packing: PackingSpec = Field(default_factory=PackingSpec, description="Where work goes: the placement policy.")
    timing: TimingSpec = Field(default_factory=TimingSpec,
                               description="When batch work runs: immediately, off-peak or at low carbon.")
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec,
                                         description="How Serve jobs' model operators are scaled.")
    queueing: QueueingSpec = Field(default_factory=QueueingSpec)
    quotas: list[NamespaceQuota] = Field(default_factory=list, max_length=1000,
                                         description="Per-namespace GPU quotas (cluster-wide, from every policy).")
    accounting: AccountingSpec = Field(default_factory=AccountingSpec,
                                       description="Prices, measured energy (DCGM), budgets and the serving "
                                                   "circuit breaker.")

    @model_validator(mode="after")
    def _unique_quotas(self) -> SchedulingPolicySpec:
        names = [q.namespace for q in self.quotas]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"quotas: namespace {', '.join(dup)} listed twice: keep one entry per namespace")
        for i, q in enumerate(self.quotas):
            check_duration(q.period, MAX_JOB_SPAN, f"quotas[{i}].period", minimum=timedelta(minutes=1))
        return self


class CarbonSignalStatus(KubeModel):
    """Whether the policy's carbon-intensity signal answers (timing.carbon)."""

    healthy: bool = Field(description="True: the provider answered with data covering now at the last check.")
    origin: str | None = Field(default=None, max_length=512, description="The provider and what it delivered.")
    message: str | None = Field(default=None, max_length=1024, description="Why it is not healthy, with the fix.")
    newest_value_at: str | None = Field(default=None, description="Time of the newest value up to now (RFC 3339).")
    checked_at: str | None = Field(default=None, description="When the signal was last checked (RFC 3339).")


class NamespaceBudgetUse(KubeModel):
    """Where one namespace stands against one of this policy's accounting.budgets in the current period."""

    namespace: str = Field(max_length=63, description="The namespace.")
    period: str = Field(max_length=32, description="The budget's period (Month or a duration).")
    period_start: str = Field(description="Start of the current period (RFC 3339).")
    state: BudgetState = Field(description="Ok, Warning (warnAt reached) or Exhausted (new work waits).")
    used_ratio: float = Field(ge=0, description="Largest share of a limit used (1 = used up).")
    limit: str | None = Field(default=None, description="The limit with that share: maxGpuHours, maxCost or maxGCO2.")
    gpu_hours: float = Field(default=0, ge=0, description="GPU-hours used in the period (deleted jobs included).")
    cost: float | None = Field(default=None, ge=0, description="Cost in the period, in currency.")
    currency: str | None = Field(default=None, max_length=3, description="ISO 4217 code of cost.")
    gco2: float | None = Field(default=None, alias="gCO2", ge=0, description="Grams CO2 emitted in the period.")
    jobs: int = Field(default=0, ge=0, description="Jobs whose use is counted (live and deleted).")
    message: str | None = Field(default=None, max_length=1024, description="In words, with what to do.")


class RetiredJob(KubeModel):
    """A deleted job's use in a period (deleting a job does not refund its namespace's budget)."""

    job: str = Field(max_length=128, description="The deleted job's uid (or 'earlier' for folded older entries).")
    usage: UsageRecord = Field(default_factory=UsageRecord, description="What it used in the period.")


class RetiredUsage(KubeModel):
    """Use of deleted jobs in one namespace's current period, kept here so a restart does not lose it."""

    namespace: str = Field(max_length=63, description="The namespace.")
    period: str = Field(max_length=32, description="The budget period.")
    start: str = Field(description="Start of the period (RFC 3339).")
    retired: list[RetiredJob] = Field(default_factory=list, max_length=128, description="Deleted jobs' use.")


class SchedulingPolicyStatus(KubeModel):
    """Observed state of a SchedulingPolicy, written by the operator's leader."""

    observed_generation: int | None = Field(default=None, description="The spec generation this status describes.")
    valid: bool | None = Field(default=None, description="False: the spec is refused and jobs using it wait.")
    message: str | None = Field(default=None, max_length=4096, description="The problems, naming each field.")
    conditions: list[Condition] = Field(default_factory=list, max_length=16,
                                        description="Valid and CarbonSignalHealthy.")
    carbon_signal: CarbonSignalStatus | None = Field(default=None, description="timing.carbon's signal health.")
    budgets: list[NamespaceBudgetUse] = Field(default_factory=list, max_length=1000,
                                              description="Per accounting.budgets entry: use in the current period.")
    retired: list[RetiredUsage] = Field(default_factory=list, max_length=1000,
                                        description="Deleted jobs' use in the current periods (restart-safe).")
    updated_at: str | None = Field(default=None, description="When this status was computed (RFC 3339).")


class SchedulingPolicy(KubeModel):
    model_config = KubeModel.model_config | {"extra": "ignore"}

    api_version: str = "gensched.io/v1alpha1"
    kind: str = "SchedulingPolicy"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: SchedulingPolicySpec = Field(default_factory=SchedulingPolicySpec)
    status: SchedulingPolicyStatus | None = None
