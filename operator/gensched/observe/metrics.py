"""Prometheus metrics exported by the operator (scraped through the chart's Service).

Every update goes through one method of ``OperatorMetrics`` (module-level functions use the default
instance on the global registry) and none ever raises: a bad value or a client error is logged and
counted in ``gensched_metrics_errors_total{function}``, and the caller's work goes on. Units are base
units: GPUs as floats, seconds, joules, grams. Per-job series carry ``namespace`` and ``generativejob``
(never ``job``, which Prometheus reserves for the scrape job) and are removed by ``forget_job``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gensched import __version__
from gensched.accounting.budgets import BudgetVerdict
from gensched.accounting.usage import Ledger, Usage

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

ADMISSION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800)
CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
PREEMPTION_REASONS = ("Preempted", "Defragment", "Budget")
JOB = ("namespace", "generativejob")


def _safe(fn: F) -> F:
    """Never let a metric update break the caller; count and log (once a minute per function) instead."""

    @functools.wraps(fn)
    def guarded(self: OperatorMetrics, *args: Any, **kw: Any) -> Any:
        try:
            return fn(self, *args, **kw)
        except Exception as exc:
            try:
                self._errors.labels(function=fn.__name__).inc()
                now = time.monotonic()
                if now - self._logged.get(fn.__name__, -math.inf) > 60:
                    self._logged[fn.__name__] = now
                    log.warning("metric update %s failed (ignored): %s", fn.__name__, exc)
            except Exception:  # pragma: no cover - the error path itself must not raise either
                pass
            return None

    return guarded  # type: ignore[return-value]


def _finite(x: float) -> float:
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"not a finite number: {x!r}")
    return v


class _JobAccounting(Collector):
    """Per-job cumulative accounting as counters: values only ever rise (a lower report is ignored)."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], tuple[Usage, str, str]] = {}

    def put(self, key: tuple[str, str], usage: Usage, currency: str, unit: str) -> None:
        old = self.jobs.get(key)
        self.jobs[key] = (usage if old is None else old[0].joined(usage), currency, unit)

    def collect(self) -> Iterator[CounterMetricFamily]:
        fams = {
            "gpu": CounterMetricFamily("gensched_job_gpu_seconds", "GPU-seconds held by a GenerativeJob "
                                       "(GPUs x seconds, shares pro rata)", labels=JOB),
            "energy": CounterMetricFamily("gensched_job_energy_joules", "Energy used by a GenerativeJob's GPUs; "
                                          "source measured (DCGM) or modelled (TDP x utilisation)",
                                          labels=(*JOB, "source")),
            "co2": CounterMetricFamily("gensched_job_emissions_grams", "gCO2 emitted by a GenerativeJob "
                                       "(energy x carbon intensity at the time)", labels=JOB),
            "cost": CounterMetricFamily("gensched_job_cost", "Cost of a GenerativeJob (GPU-hour prices plus "
                                        "electricity) in the policy's currency", labels=(*JOB, "currency")),
            "out": CounterMetricFamily("gensched_job_outputs", "Useful outputs reported by a GenerativeJob "
                                       "(items, tokens or requests)", labels=(*JOB, "unit")),
        }
        for (ns, name), (u, currency, unit) in sorted(self.jobs.items()):
            fams["gpu"].add_metric([ns, name], u.gpu_seconds)
            fams["energy"].add_metric([ns, name, "measured"], u.measured_joules)
            fams["energy"].add_metric([ns, name, "modelled"], u.modelled_joules)
            fams["co2"].add_metric([ns, name], u.gco2)
            fams["cost"].add_metric([ns, name, currency], u.cost)
            fams["out"].add_metric([ns, name, unit], u.outputs)
        yield from fams.values()


class OperatorMetrics:
    """All gensched metrics on one registry (tests make their own; the operator uses the global one)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY, version: str = __version__) -> None:
        r = registry
        self._logged: dict[str, float] = {}
        self._errors = Counter("gensched_metrics_errors", "Metric updates that failed and were skipped",
                               ["function"], registry=r)
        self._decisions = Counter("gensched_decisions", "Scheduling decisions taken, by the reason of their Event",
                                  ["decision"], registry=r)
        self._capacity = Gauge("gensched_gpu_capacity", "GPUs on schedulable GPU nodes known to the operator",
                               ["gpu_model"], registry=r)
        self._allocated = Gauge("gensched_gpu_allocated", "GPUs reserved by gensched (shares as fractions)",
                                ["gpu_model"], registry=r)
        self._fragmentation = Gauge("gensched_gpu_fragmentation_ratio",
                                    "Share of all GPU capacity left free on partly used GPUs", registry=r)
        self._nodes = Gauge("gensched_gpu_nodes", "Schedulable GPU nodes known to the operator", registry=r)
        self._saved = Counter("gensched_carbon_saved_grams", "gCO2 saved by time shifting, measured at job end "
                              "(jobs that ran cleaner than at their decision time)", registry=r)
        self._extra = Counter("gensched_carbon_extra_grams", "gCO2 emitted beyond starting at the decision time "
                              "(jobs whose deferral ran dirtier); net saving = saved - extra", registry=r)
        self._deferred = Counter("gensched_deferred_jobs", "Batch jobs held back for a cleaner or cheaper time",
                                 registry=r)
        self._replicas = Gauge("gensched_model_operator_replicas", "Replicas per model operator of a Serve job",
                               [*JOB, "operator"], registry=r)
        self._pending = Gauge("gensched_pending_jobs", "GenerativeJobs waiting, by namespace and queue reason",
                              ["namespace", "reason"], registry=r)
        self._oldest = Gauge("gensched_pending_oldest_queued_timestamp_seconds",
                             "Unix time the longest-waiting GenerativeJob of a namespace was queued", ["namespace"],
                             registry=r)
        self._admission = Histogram("gensched_admission_wait_seconds",
                                    "Time from queueing to release of a GenerativeJob", ["namespace"],
                                    buckets=ADMISSION_BUCKETS, registry=r)
        self._preemptions = Counter("gensched_preemptions", "Jobs suspended to make room, by reason "
                                    "(Preempted, Defragment, Budget)", ["reason"], registry=r)
        self._cycles = Counter("gensched_scheduling_cycles", "Scheduling cycles run (by the leader)", registry=r)
        self._cycle_s = Histogram("gensched_scheduling_cycle_duration_seconds", "Wall time of one scheduling cycle",
                                  buckets=CYCLE_BUCKETS, registry=r)
        self._last_cycle = Gauge("gensched_last_scheduling_cycle_timestamp_seconds",
                                 "Unix time of the last scheduling cycle", registry=r)
        self._build = Gauge("gensched_build_info", "gensched version running (value 1)", ["version"], registry=r)
        self._leader = Gauge("gensched_leader", "1 while this replica holds the Lease (writes decisions), else 0",
                             ["identity"], registry=r)
        self._carbon_ts = Gauge("gensched_carbon_signal_timestamp_seconds",
                                "Unix time of the newest carbon-intensity value fetched, per SchedulingPolicy",
                                ["policy"], registry=r)
        self._ns = {
            "gpu": Gauge("gensched_namespace_gpu_seconds", "GPU-seconds used by a namespace in the current "
                         "budget period", ["namespace", "period"], registry=r),
            "energy": Gauge("gensched_namespace_energy_joules", "Energy used by a namespace in the current period",
                            ["namespace", "period"], registry=r),
            "co2": Gauge("gensched_namespace_emissions_grams", "gCO2 of a namespace in the current period",
                         ["namespace", "period"], registry=r),
            "cost": Gauge("gensched_namespace_cost", "Cost of a namespace in the current period",
                          ["namespace", "period", "currency"], registry=r),
            "out": Gauge("gensched_namespace_outputs", "Outputs of a namespace in the current period",
                         ["namespace", "period"], registry=r),
        }
        self._budget = Gauge("gensched_budget_used_ratio", "Share of a budget limit used (1 = exhausted); "
                             "generativejob empty for namespace budgets, period empty for job budgets",
                             [*JOB, "period", "limit"], registry=r)
        self._breaker = Gauge("gensched_circuit_breaker_open", "1 while a Serve job's spend circuit breaker is open",
                              JOB, registry=r)
        self._jobs = _JobAccounting()
        r.register(self._jobs)
        self._series: dict[tuple[str, str], set[tuple[str, tuple[str, ...]]]] = {}
        self._models: set[str] = set()
        self._pending_keys: set[tuple[str, str]] = set()
        self._oldest_keys: set[str] = set()
        self._build.labels(version=version).set(1)

    def _track(self, ns: str, name: str, metric: str, labels: tuple[str, ...]) -> None:
        self._series.setdefault((ns, name), set()).add((metric, labels))

    # -- decisions and the cluster picture --------------------------------------------------------
    @_safe
    def record_decision(self, reason: str) -> None:
        """Count one decision: call once per Event emitted for it (the only place decisions are counted)."""
        self._decisions.labels(decision=str(reason)).inc()

    @_safe
    def update_cluster(self, allocated_milli: float, total_milli: float, fragmentation: float, nodes: int,
                       by_model: Mapping[str, tuple[float, float]] | None = None) -> None:
        """Cluster picture after any change: totals in milli-GPU (as the reservations report them), and per
        GPU model ``{model: (capacity GPUs, allocated GPUs)}`` when known (else one series without a model)."""
        self._fragmentation.set(_finite(fragmentation))
        self._nodes.set(_finite(nodes))
        if by_model is None:
            by_model = {"": (_finite(total_milli) / 1000, _finite(allocated_milli) / 1000)}
        values = {m: (_finite(c), _finite(a)) for m, (c, a) in by_model.items()}
        for model in self._models - set(values):  # models that left
            self._capacity.remove(model)
            self._allocated.remove(model)
        for model, (cap, alloc) in values.items():
            self._capacity.labels(gpu_model=model).set(cap)
            self._allocated.labels(gpu_model=model).set(alloc)
        self._models = set(values)

    @_safe
    def record_carbon_saving(self, grams: float) -> None:
        """A job's measured saving at its end; a negative one (it ran dirtier) counts as extra grams."""
        g = _finite(grams)
        if g >= 0:
            self._saved.inc(g)
        else:
            self._extra.inc(-g)

    @_safe
    def record_deferred(self) -> None:
        """A batch job was deferred for the first time."""
        self._deferred.inc()

    @_safe
    def record_carbon_signal(self, policy: str, newest_value_at: float) -> None:
        """A carbon signal was fetched; ``newest_value_at`` is the Unix time of its newest value."""
        self._carbon_ts.labels(policy=policy).set(_finite(newest_value_at))

    # -- queue and cycle ----------------------------------------------------------------------------
    @_safe
    def set_pending(self, counts: Mapping[tuple[str, str], int],
                    oldest_queued: Mapping[str, float] | None = None) -> None:
        """Jobs waiting in the queue (not those deferred by timing) after a cycle: counts per
        ``(namespace, reason)`` and, per namespace, the Unix time its longest-waiting job was queued.
        Series not given are removed (call with empty maps on losing leadership)."""
        values = {(ns, reason): _finite(n) for (ns, reason), n in counts.items()}
        oldest = {ns: _finite(t) for ns, t in (oldest_queued or {}).items()}
        for key in self._pending_keys - set(values):
            self._pending.remove(*key)
        for ns in self._oldest_keys - set(oldest):
            self._oldest.remove(ns)
        for (ns, reason), n in values.items():
            self._pending.labels(namespace=ns, reason=reason).set(n)
        for ns, t in oldest.items():
            self._oldest.labels(namespace=ns).set(t)
        self._pending_keys, self._oldest_keys = set(values), set(oldest)

    @_safe
    def observe_admission_wait(self, namespace: str, seconds: float) -> None:
        """A job was released: seconds from queueing to release."""
        self._admission.labels(namespace=namespace).observe(max(0.0, _finite(seconds)))

    @_safe
    def record_preemption(self, reason: str) -> None:
        """A job was suspended to make room: Preempted, Defragment or Budget (anything else counts as Other)."""
        self._preemptions.labels(reason=reason if reason in PREEMPTION_REASONS else "Other").inc()

    @_safe
    def record_cycle(self, placed: int = 0, waiting: int = 0, evictions: int = 0, *,
                     duration_seconds: float | None = None, now: float | None = None) -> None:
        """One scheduling cycle ran (call once per cycle, from the leader); pass its wall time."""
        self._cycles.inc()
        self._last_cycle.set(time.time() if now is None else _finite(now))
        if duration_seconds is not None:
            self._cycle_s.observe(max(0.0, _finite(duration_seconds)))

    @_safe
    def set_leader(self, identity: str, leader: bool) -> None:
        """Leadership of this replica changed."""
        self._leader.labels(identity=identity).set(1 if leader else 0)

    # -- per job ------------------------------------------------------------------------------------
    @_safe
    def set_operator_replicas(self, namespace: str, name: str, replicas: Mapping[str, int]) -> None:
        """Replicas of every model operator of a Serve job; operators not listed are removed."""
        for metric, labels in list(self._series.get((namespace, name), ())):
            if metric == "replicas" and labels[2] not in replicas:
                self._replicas.remove(*labels)
                self._series[(namespace, name)].discard((metric, labels))
        for op, n in replicas.items():
            self._replicas.labels(namespace=namespace, generativejob=name, operator=op).set(_finite(n))
            self._track(namespace, name, "replicas", (namespace, name, op))

    @_safe
    def set_operator_replica(self, namespace: str, name: str, operator: str, n: float) -> None:
        """Replicas of one model operator (prefer ``set_operator_replicas`` with all of them)."""
        self._replicas.labels(namespace=namespace, generativejob=name, operator=operator).set(_finite(n))
        self._track(namespace, name, "replicas", (namespace, name, operator))

    @_safe
    def record_job_accounting(self, namespace: str, name: str, usage: Usage | Ledger | Mapping,
                              currency: str = "", output_unit: str = "") -> None:
        """A job's accounting so far (a Usage, a Ledger, or its status.accounting); never lowers a value."""
        if isinstance(usage, Ledger):
            usage = usage.total
        elif isinstance(usage, Mapping):
            currency = currency or str(usage.get("currency") or "")
            output_unit = output_unit or str(usage.get("outputUnit") or "")
            usage = Ledger.from_dict(usage.get("ledger")).total
        self._jobs.put((namespace, name), usage, currency, output_unit)

    @_safe
    def record_namespace_usage(self, namespace: str, period: str, usage: Usage, currency: str = "") -> None:
        """A namespace's usage in the current budget period (a gauge: it starts again each period)."""
        self._ns["gpu"].labels(namespace=namespace, period=period).set(_finite(usage.gpu_seconds))
        self._ns["energy"].labels(namespace=namespace, period=period).set(_finite(usage.joules))
        self._ns["co2"].labels(namespace=namespace, period=period).set(_finite(usage.gco2))
        self._ns["cost"].labels(namespace=namespace, period=period, currency=currency).set(_finite(usage.cost))
        self._ns["out"].labels(namespace=namespace, period=period).set(_finite(usage.outputs))

    @_safe
    def record_budget(self, namespace: str, name: str | None, period: str | None, verdict: BudgetVerdict) -> None:
        """Used share of each limit of a job budget (``name``) or a namespace budget (``period``)."""
        for limit, ratio in verdict.ratios.items():
            labels = (namespace, name or "", period or "", limit)
            self._budget.labels(*labels).set(_finite(ratio))
            if name:
                self._track(namespace, name, "budget", labels)

    @_safe
    def record_breaker(self, namespace: str, name: str, is_open: bool) -> None:
        """State of a Serve job's circuit breaker."""
        self._breaker.labels(namespace=namespace, generativejob=name).set(1 if is_open else 0)
        self._track(namespace, name, "breaker", (namespace, name))

    @_safe
    def forget_job(self, namespace: str, name: str) -> None:
        """The job was deleted: remove every series labelled with it."""
        for metric, labels in self._series.pop((namespace, name), set()):
            gauge = {"replicas": self._replicas, "budget": self._budget, "breaker": self._breaker}[metric]
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        self._jobs.jobs.pop((namespace, name), None)


METRICS = OperatorMetrics()

record_decision = METRICS.record_decision
update_cluster = METRICS.update_cluster
record_carbon_saving = METRICS.record_carbon_saving
record_deferred = METRICS.record_deferred
record_carbon_signal = METRICS.record_carbon_signal
set_pending = METRICS.set_pending
observe_admission_wait = METRICS.observe_admission_wait
record_preemption = METRICS.record_preemption
record_cycle = METRICS.record_cycle
set_leader = METRICS.set_leader
set_operator_replicas = METRICS.set_operator_replicas
record_job_accounting = METRICS.record_job_accounting
record_namespace_usage = METRICS.record_namespace_usage
record_budget = METRICS.record_budget
record_breaker = METRICS.record_breaker
forget_job = METRICS.forget_job


def serve(port: int) -> None:
    if port:
        start_http_server(port)


# -- the names the controller used before these functions (kept working; prefer the functions) ------
class _Inc:
    def __init__(self, fn: Callable[[float], None]) -> None:
        self._fn = fn

    def inc(self, amount: float = 1.0) -> None:
        self._fn(amount)


class _Decisions:
    """``DECISIONS.labels(decision=r).inc()`` == ``record_decision(r)``."""

    def labels(self, decision: str) -> _Inc:
        return _Inc(lambda _n: record_decision(decision))


class _Set:
    def __init__(self, fn: Callable[[float], None]) -> None:
        self.set = fn


class _Replicas:
    """``MODEL_OPERATOR_REPLICAS.labels(job="ns/name", operator=op).set(n)`` sets that one operator."""

    def labels(self, job: str, operator: str) -> _Set:
        ns, _, name = job.partition("/")
        return _Set(lambda n: METRICS.set_operator_replica(ns, name, operator, n))


DECISIONS = _Decisions()
CARBON_SAVED = _Inc(lambda g: record_carbon_saving(g))
DEFERRED = _Inc(lambda _n: record_deferred())
MODEL_OPERATOR_REPLICAS = _Replicas()
