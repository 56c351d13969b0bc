"""Budgets: how much of a GPU-hours, cost or gCO2 limit is used, per job and per namespace and period.

A budget is ``Exhausted`` exactly when some limit is used up (used >= limit), ``Warning`` when it is not
but some limit is used to ``warn_at`` of it or more, ``Ok`` otherwise. The caller decides what each state
does (an Event and a metric on Warning; suspend a batch job, queue a namespace's new work on Exhausted).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gensched.accounting.periods import period_start
from gensched.accounting.usage import Ledger, Usage, _iso, _when
from gensched.api.accounting import BudgetState

# wire name of each limit -> how to read the amount it limits from a Usage
LIMITS = {"maxGpuHours": ("GPU-hours", lambda u: u.gpu_hours),
          "maxCost": ("cost", lambda u: u.cost),
          "maxGCO2": ("gCO2", lambda u: u.gco2)}


@dataclass(frozen=True)
class Limits:
    """The limits of one budget; None means no limit of that kind."""

    gpu_hours: float | None = None
    cost: float | None = None
    gco2: float | None = None
    warn_at: float = 0.8

    def __post_init__(self) -> None:
        for name, v in (("maxGpuHours", self.gpu_hours), ("maxCost", self.cost), ("maxGCO2", self.gco2)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} is {v}: a budget must be above zero (remove it for no limit)")
        if not 0 < self.warn_at <= 1:
            raise ValueError(f"warnAt is {self.warn_at}: use a fraction in (0, 1], e.g. 0.8")

    def items(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in (("maxGpuHours", self.gpu_hours), ("maxCost", self.cost),
                                    ("maxGCO2", self.gco2)) if v is not None]


@dataclass(frozen=True)
class BudgetVerdict:
    state: BudgetState
    used_ratio: float  # the largest used/limit over the limits set (0 with none)
    binding: str | None  # wire name of the limit with that ratio
    ratios: dict[str, float] = field(default_factory=dict)
    message: str = ""


def evaluate(used: Usage, limits: Limits, what: str = "budget") -> BudgetVerdict:
    """State of a budget given what was used against it."""
    ratios = {name: LIMITS[name][1](used) / limit for name, limit in limits.items()}
    if not ratios:
        return BudgetVerdict(BudgetState.OK, 0.0, None, {}, f"{what}: no limits set")
    binding = max(ratios, key=lambda k: ratios[k])
    limit = dict(limits.items())
    exhausted = [k for k in ratios if LIMITS[k][1](used) >= limit[k]]
    warned = [k for k in ratios if LIMITS[k][1](used) >= limits.warn_at * limit[k]]
    state = BudgetState.EXHAUSTED if exhausted else BudgetState.WARNING if warned else BudgetState.OK
    key = exhausted[0] if exhausted else warned[0] if warned else binding
    label, read = LIMITS[key]
    words = {BudgetState.EXHAUSTED: "exhausted", BudgetState.WARNING: "nearly used up", BudgetState.OK: "within"}
    msg = (f"{what} {words[state]}: {read(used):.4g} of {limit[key]:g} {label} used "
           f"({100 * ratios[key]:.0f}%, {key})")
    if state == BudgetState.EXHAUSTED:
        msg += f"; raise {key} to resume"
    return BudgetVerdict(state, ratios[binding], binding, ratios, msg)


def seconds_to_exhaustion(used: Usage, limits: Limits, rate: Usage) -> float | None:
    """At ``rate`` (usage per second), seconds until the first limit is used up; 0 when already,
    None when no limit would ever be reached."""
    best: float | None = None
    for name, limit in limits.items():
        read = LIMITS[name][1]
        left, r = limit - read(used), read(rate)
        if left <= 0:
            return 0.0
        if r > 0:
            best = left / r if best is None else min(best, left / r)
    return best


# -- namespaces -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NamespacePeriod:
    """Usage of jobs deleted during one period of one namespace (their ledgers are gone with them),
    kept by the caller (e.g. in the SchedulingPolicy status) so deleting a job does not refund it."""

    namespace: str
    period: str
    start: datetime
    retired: Mapping[str, Usage] = field(default_factory=dict)  # job uid -> its usage in this period

    def to_dict(self) -> dict:
        return {"namespace": self.namespace, "period": self.period, "start": _iso(self.start),
                "retired": [{"job": k, "usage": v.to_dict()} for k, v in sorted(self.retired.items())]}

    @classmethod
    def from_dict(cls, d: Mapping) -> NamespacePeriod:
        start = _when(d.get("start"))
        if start is None or not isinstance(d.get("namespace"), str) or not isinstance(d.get("period"), str):
            raise ValueError("namespace period record needs namespace, period and start")
        retired = {r["job"]: Usage.from_dict(r.get("usage")) for r in d.get("retired") or []
                   if isinstance(r, Mapping) and isinstance(r.get("job"), str)}
        return cls(d["namespace"], d["period"], start, retired)


def retire(record: NamespacePeriod | None, namespace: str, period: str, at: datetime, job_uid: str,
           ledger: Ledger) -> NamespacePeriod:
    """Fold a deleted job's usage in the current period into the namespace's record of that period
    (a record of an older period is replaced). Retiring the same job twice counts it once."""
    start = period_start(at, period)
    if record is None or record.start != start or record.period != period or record.namespace != namespace:
        record = NamespacePeriod(namespace, period, start, {})
    used = ledger.bucket(period, at)
    old = record.retired.get(job_uid)
    return NamespacePeriod(namespace, period, start,
                           {**record.retired, job_uid: used if old is None else old.joined(used)})


def merge_periods(a: NamespacePeriod, b: NamespacePeriod) -> NamespacePeriod:
    """Join two copies of one namespace period record; the later period wins, the same one is joined."""
    if (a.namespace, a.period) != (b.namespace, b.period):
        raise ValueError("merge_periods: records of different namespaces or periods")
    if a.start != b.start:
        return a if a.start > b.start else b
    keys = set(a.retired) | set(b.retired)
    return NamespacePeriod(a.namespace, a.period, a.start,
                           {k: a.retired.get(k, Usage()).joined(b.retired.get(k, Usage())) for k in keys})


def namespace_usage(jobs: Iterable[tuple[str, Ledger]], period: str, at: datetime,
                    retired: Iterable[NamespacePeriod] = ()) -> dict[str, Usage]:
    """Per namespace, usage in the period containing ``at``: the live jobs' buckets plus retired jobs."""
    out: dict[str, Usage] = {}
    for ns, ledger in jobs:
        out[ns] = out.get(ns, Usage()) + ledger.bucket(period, at)
    start = period_start(at, period)
    for rec in retired:
        if rec.period == period and rec.start == start:
            for u in rec.retired.values():
                out[rec.namespace] = out.get(rec.namespace, Usage()) + u
    return out


def totals_by_namespace(jobs: Iterable[tuple[str, Usage]]) -> dict[str, Usage]:
    """Sum of usages per namespace (e.g. job totals for a report)."""
    out: dict[str, Usage] = {}
    for ns, u in jobs:
        out[ns] = out.get(ns, Usage()) + u
    return out
