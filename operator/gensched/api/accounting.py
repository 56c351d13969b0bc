"""API of accounting: the policy's ``accounting`` block, job budgets and ``status.accounting``.

The numbers are computed by ``gensched.accounting`` (pure); these models only say what is configured and
what is reported, with a description on every field for ``kubectl explain``.
"""

from __future__ import annotations

import math
from datetime import timedelta
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from gensched.api.base import KubeModel
from gensched.api.durations import DURATION_PATTERN, MAX_JOB_SPAN, check_duration

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PERIOD_PATTERN = r"^(Month|([0-9]+(\.[0-9]+)?(d|h|m|s))+)$"
RESET_BREAKER_ANNOTATION = "gensched.io/reset-circuit-breaker"  # any new value resets an open breaker



class EnergySource(StrEnum):
    MEASURED = "Measured"
    MODELLED = "Modelled"
    MIXED = "Mixed"


class BudgetState(StrEnum):
    OK = "Ok"
    WARNING = "Warning"
    EXHAUSTED = "Exhausted"


class BreakerAction(StrEnum):
    WARN = "Warn"
    HOLD_SCALE_UP = "HoldScaleUp"
    SCALE_TO_MINIMUM = "ScaleToMinimum"


class BudgetLimits(KubeModel):
    """Limits shared by job and namespace budgets; at least one is set."""

    max_gpu_hours: float | None = Field(default=None, gt=0, le=1e9,
                                        description="GPU-hours (GPUs held x hours, shares pro rata) that may be used.")
    max_cost: float | None = Field(default=None, gt=0, le=1e12,
                                   description="Cost that may be spent, in accounting.currency of the policy.")
    max_gco2: float | None = Field(default=None, alias="maxGCO2", gt=0, le=1e15,
                                   description="Grams of CO2 that may be emitted (energy x carbon intensity).")
    warn_at: float = Field(default=0.8, gt=0, le=1,
                           description="Share of any limit at which a Warning Event and metric are emitted.")

    @field_validator("max_gpu_hours", "max_cost", "max_gco2", mode="before")
    @classmethod
    def _positive(cls, v: object) -> object:
        """Zero or negative budgets are refused with the fix (the location names the field)."""
        if isinstance(v, int | float) and not isinstance(v, bool) and (not math.isfinite(v) or v <= 0):
            raise ValueError(f"{v} is not a usable limit: a budget must be above zero (remove the field for no "
                             "limit)")
        return v

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetLimits:
        if self.max_gpu_hours is None and self.max_cost is None and self.max_gco2 is None:
            raise ValueError("a budget needs at least one of maxGpuHours, maxCost, maxGCO2")
        return self


class JobBudget(BudgetLimits):
    """Spending cap of one job: a batch job that reaches it is suspended (it checkpoints); a serving job's
    circuit breaker holds scale-ups."""


class NamespaceBudget(BudgetLimits):
    """Spending cap of one namespace per period: over it, new work of the namespace waits (Pending)."""

    namespace: str = Field(pattern=DNS_LABEL, max_length=63, description="The namespace this budget binds.")
    period: str = Field(default="Month", pattern=PERIOD_PATTERN, max_length=32,
                        description="Counting period: Month (calendar month, UTC) or a duration from 1h to 366d "
                                    "such as 24h or 7d (aligned to Monday 00:00 UTC).")

    @field_validator("period")
    @classmethod
    def _period(cls, v: str) -> str:
        if v != "Month":
            check_duration(v, MAX_JOB_SPAN, "accounting.budgets[].period", minimum=timedelta(hours=1))
        return v


class GpuPrice(KubeModel):
    """Price of one GPU-hour of a GPU model."""

    gpu_model: str = Field(min_length=1, max_length=128,
                           description="GPU model name matched in nvidia.com/gpu.product (the longest match wins), "
                                       "e.g. A100 or H100-SXM.")
    price_per_gpu_hour: float = Field(ge=0, le=1e6, description="Price of one GPU-hour, in accounting.currency.")


class DcgmSpec(KubeModel):
    """Measured energy from the NVIDIA DCGM exporter's metrics in Prometheus."""

    enabled: bool = Field(default=False,
                          description="Read DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (else DCGM_FI_DEV_POWER_USAGE) per "
                                      "job; without readings energy is modelled from TDP x utilisation.")
    prometheus_url: str | None = Field(default=None, max_length=2048,
                                       description="Prometheus holding the DCGM metrics; default: "
                                                   "autoscaling.prometheusUrl.")
    pod_label: str = Field(default="pod", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=128,
                           description="Label carrying the pod name on DCGM series (exported_pod when scraped "
                                       "without honorLabels).")
    namespace_label: str = Field(default="namespace", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=128,
                                 description="Label carrying the pod's namespace on DCGM series.")


class CircuitBreakerSpec(KubeModel):
    """Stop a serving job's spend running away from its traffic."""

    enabled: bool = Field(default=True, description="Judge Serve jobs' spend against their requests served.")
    factor: float = Field(default=2.0, gt=1, le=100,
                          description="Opens when GPU-seconds per request served rose by this factor between the "
                                      "first and second half of the window.")
    window: str = Field(default="1h", pattern=DURATION_PATTERN, max_length=32,
                        description="How far back spend and output are compared, 5m to 7d, e.g. 30m or 2h.")
    min_requests: int = Field(default=100, ge=1, le=10**9,
                              description="Requests a half-window needs before its per-request spend is judged.")
    action: BreakerAction = Field(
        default=BreakerAction.HOLD_SCALE_UP,
        description="Warn (condition and Event only), HoldScaleUp (no further scale-ups), or ScaleToMinimum "
                    "(also scale to serve.minReplicas once the budget is exhausted, even below the SLO).")

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        check_duration(v, timedelta(days=7), "accounting.circuitBreaker.window", minimum=timedelta(minutes=5))
        return v


class AccountingSpec(KubeModel):
    """What jobs cost and emit, and the budgets that bind them."""

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code of all prices and costs.")
    pricing: list[GpuPrice] = Field(default_factory=list, max_length=200,
                                    description="Price per GPU-hour by GPU model.")
    default_price_per_gpu_hour: float | None = Field(
        default=None, ge=0, le=1e6,
        description="Price per GPU-hour of models not in pricing; unset: their GPU time is reported unpriced.")
    electricity_cost: bool = Field(
        default=False,
        description="Add energy x the electricity price of the time (timing.offPeakWindows pricePerKwh, else "
                    "timing.defaultPricePerKwh) to the cost; leave off when GPU-hour prices include power.")
    dcgm: DcgmSpec = Field(default_factory=DcgmSpec, description="Measured energy from the DCGM exporter.")
    budgets: list[NamespaceBudget] = Field(default_factory=list, max_length=1000,
                                           description="Per-namespace budgets per period (cluster-wide).")
    circuit_breaker: CircuitBreakerSpec = Field(default_factory=CircuitBreakerSpec,
                                                description="Serving spend circuit breaker.")
    interval_seconds: int = Field(default=60, ge=5, le=3600,
                                  description="How often running jobs' accounting is brought up to date.")

    @model_validator(mode="after")
    def _unique(self) -> AccountingSpec:
        keys = [(b.namespace, b.period) for b in self.budgets]
        dup = sorted({f"{n} ({p})" for n, p in keys if keys.count((n, p)) > 1})
        if dup:
            raise ValueError(f"accounting.budgets: {', '.join(dup)} listed twice: keep one entry per namespace "
                             "and period")
        models = [p.gpu_model for p in self.pricing]
        dup = sorted({m for m in models if models.count(m) > 1})
        if dup:
            raise ValueError(f"accounting.pricing: GPU model {', '.join(dup)} priced twice: keep one entry")
        return self


# -- status ---------------------------------------------------------------------------------------
class UsageRecord(KubeModel):
    """Additive amounts (zero when absent)."""

    gpu_seconds: float | None = Field(default=None, ge=0, description="GPUs held x seconds.")
    measured_joules: float | None = Field(default=None, ge=0, description="Energy read from DCGM.")
    modelled_joules: float | None = Field(default=None, ge=0, description="Energy from TDP x utilisation.")
    gco2: float | None = Field(default=None, alias="gCO2", ge=0, description="Emissions, grams CO2.")
    gpu_cost: float | None = Field(default=None, ge=0, description="GPU-hours x price per GPU-hour.")
    energy_cost: float | None = Field(default=None, ge=0, description="kWh x electricity price.")
    outputs: float | None = Field(default=None, ge=0, description="Useful outputs produced.")
    unpriced_gpu_seconds: float | None = Field(default=None, ge=0, description="GPU time with no price.")
    uncarboned_joules: float | None = Field(default=None, ge=0,
                                            description="Energy used while no carbon intensity was known.")


class LedgerCursor(KubeModel):
    """The last sample accounted for: the next interval starts here."""

    t: str = Field(description="Time of the sample (RFC 3339).")
    gpus: float = Field(default=0, ge=0, description="GPUs held from then on.")
    gpu_model: str | None = Field(default=None, description="GPU product of those GPUs.")
    energy_joules: float | None = Field(default=None, ge=0, description="DCGM energy counter then, joules.")
    power_watts: float | None = Field(default=None, ge=0, description="DCGM power then, watts.")
    utilization: float | None = Field(default=None, ge=0, le=1, description="GPU utilisation then, 0..1.")
    outputs: float | None = Field(default=None, ge=0, description="Output counter then.")


class LedgerBucket(KubeModel):
    """Usage in the current period of one length (for namespace budgets)."""

    period: str = Field(description="Period length (a duration or Month).")
    start: str = Field(description="Start of the current period (RFC 3339).")
    usage: UsageRecord = Field(default_factory=UsageRecord, description="Used in it so far.")


class AccountingLedger(KubeModel):
    """The restart-safe record the numbers above are computed from (merged, never lowered, on restart)."""

    total: UsageRecord = Field(default_factory=UsageRecord, description="Used since the job started.")
    cursor: LedgerCursor | None = Field(default=None, description="The last sample accounted for.")
    buckets: list[LedgerBucket] = Field(default_factory=list, max_length=16,
                                        description="Usage in the current budget periods.")
    energy_resets: int = Field(default=0, ge=0, description="DCGM energy counter resets or jumps seen.")
    output_resets: int = Field(default=0, ge=0, description="Output counter resets seen.")
    started_at: str | None = Field(default=None, description="First sample (RFC 3339).")
    final: bool = Field(default=False, description="The job ended; nothing more is added.")


class BudgetStatus(KubeModel):
    """Where the job stands against its budget (spec.budget) or its namespace's."""

    state: BudgetState = Field(description="Ok, Warning (warnAt reached) or Exhausted (a limit reached).")
    used_ratio: float = Field(ge=0, description="Largest share of a limit used (1 = used up).")
    limit: str | None = Field(default=None, description="The limit with that share: maxGpuHours, maxCost or maxGCO2.")
    message: str | None = Field(default=None, description="In words, with what to do.")


class BreakerSample(KubeModel):
    """One observation the circuit breaker judges: GPUs held and requests served so far."""

    t: str = Field(max_length=40, description="When it was taken (RFC 3339).")
    gpus: float = Field(ge=0, description="GPUs the Serve job's workers held from then on.")
    requests: float = Field(ge=0, description="Requests served so far (a counter that never goes back).")


class CircuitBreakerStatus(KubeModel):
    """The serving circuit breaker of a Serve job."""

    open: bool = Field(description="True: scale-ups are held (see accounting.circuitBreaker.action).")
    reason: str | None = Field(default=None, description="SpendOutpacedOutput, BudgetRate, Steady or "
                                                         "InsufficientData.")
    message: str | None = Field(default=None, description="Spend and output growth over the window.")
    since: str | None = Field(default=None, description="When it opened (RFC 3339).")
    reset_at: str | None = Field(default=None, description=f"Last reset by the {RESET_BREAKER_ANNOTATION} "
                                                           "annotation (RFC 3339).")
    reset_value: str | None = Field(default=None, max_length=256,
                                    description=f"The {RESET_BREAKER_ANNOTATION} value that reset it last (a new "
                                                "value resets it again).")
    samples: list[BreakerSample] = Field(default_factory=list, max_length=256,
                                         description="Recent observations over the breaker's window (restart-safe).")


class OutputCounter(KubeModel):
    """A summed counter made monotonic: outputs = last + offset."""

    last: float = Field(ge=0, description="The summed counter as last read.")
    offset: float = Field(default=0, ge=0, description="What drops of the sum (replicas removed) took away.")


class AccountingStatus(KubeModel):
    """What the job used and produced so far; final when it ended."""

    gpu_hours: float | None = Field(default=None, ge=0, description="GPUs held x hours (shares pro rata).")
    energy_kwh: float | None = Field(default=None, alias="energyKWh", ge=0, description="Energy used, kWh.")
    energy_source: EnergySource | None = Field(
        default=None, description="Measured (DCGM), Modelled (TDP x utilisation) or Mixed.")
    gco2: float | None = Field(default=None, alias="gCO2", ge=0,
                               description="Emissions, grams CO2, at the carbon intensity when the energy was used.")
    cost: float | None = Field(default=None, ge=0, description="GPU-hour prices plus electricity, in currency.")
    currency: str | None = Field(default=None, description="ISO 4217 code of cost.")
    outputs: float | None = Field(default=None, ge=0, description="Useful outputs reported by the workload.")
    output_unit: str | None = Field(default=None, description="What an output is: items, tokens or requests.")
    cost_per_output: float | None = Field(default=None, ge=0, description="cost / outputs.")
    gpu_seconds_per_output: float | None = Field(default=None, ge=0, description="GPU-seconds / outputs.")
    outputs_per_kwh: float | None = Field(default=None, alias="outputsPerKWh", ge=0, description="outputs / kWh.")
    budget: BudgetStatus | None = Field(default=None, description="State against the job's or namespace's budget.")
    circuit_breaker: CircuitBreakerStatus | None = Field(default=None, description="Serve jobs: spend breaker.")
    final: bool = Field(default=False, description="The job ended and these are its final numbers.")
    updated_at: str | None = Field(default=None, description="When these numbers were last brought up to date.")
    notes: list[str] = Field(default_factory=list, max_length=20,
                             description="Fallbacks in effect (modelled energy, missing prices or carbon signal).")
    ledger: AccountingLedger | None = Field(default=None, description="The record the numbers come from.")
    output_counter: OutputCounter | None = Field(
        default=None, description="Serve jobs: the raw requests-served reading and the compensation for replicas "
                                  "that left (their counts vanish from the sum), so outputs never go back.")
