"""Live accounting of running jobs (issue 11): samples -> ledger -> status.accounting, budgets, breaker.

Called from a job's pass (``lifecycle._mirror`` for released batch Jobs, ``lifecycle._serve`` for running
Serve jobs) at most every ``accounting.intervalSeconds`` of the operator's clock, when the job is
suspended, and once at its end. Each sample says what the job held since the previous one:

- **GPUs and model**: the placement record (a batch Job counts while it is not suspended; a Serve job its
  worker GPUs recorded on the RayService), the GPU product label of the node;
- **energy**: the DCGM exporter's series in Prometheus (``accounting.dcgm``), summed over the job's pods
  by their names (``podLabel``/``namespaceLabel``); without readings the core models it from TDP;
- **outputs**: batch: the entrypoint's counter ``gensched_workload_outputs_total`` (items done, its
  checkpoint included) of the Job's pods; Serve: requests served (Ray Serve's request counter, summed over
  replicas, made monotonic because a removed replica's count leaves the sum); read from
  ``autoscaling.prometheusUrl``, else ``accounting.dcgm.prometheusUrl``;
- **carbon intensity**: the policy's carbon source (``timing.carbon``), fetched at most every 5 minutes.

The record (``status.accounting.ledger``) is merged with what this process last computed, so a status
write that lost a conflict or an operator restart never loses or lowers recorded usage (``merge``).

Bad input falls back and says so (``Accounted`` condition, ``status.accounting.notes``): Prometheus down
or without DCGM series -> modelled energy; no price for a GPU model -> unpriced GPU time; no carbon signal
-> energy outside gCO2; outputs missing -> ratios unset. Accounting never stops a lifecycle.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from pydantic import ValidationError

from gensched.accounting import (
    Ledger,
    Limits,
    Prices,
    Sample,
    ServeSample,
    Usage,
    advance,
    circuit_breaker,
    evaluate,
    finalize,
    latch,
    merge,
    seconds_to_exhaustion,
    to_status,
)
from gensched.accounting.budgets import BudgetVerdict
from gensched.accounting.dcgm import job_queries
from gensched.accounting.signals import Signal
from gensched.api import GenerativeJobSpec, SchedulingPolicySpec
from gensched.api.accounting import RESET_BREAKER_ANNOTATION, BreakerAction, BudgetState
from gensched.api.durations import parse_duration, parse_instant, rfc3339
from gensched.api.errors import bounded
from gensched.controller import clock, telemetry
from gensched.controller.cache import CACHE
from gensched.controller.kube import kube
from gensched.controller.objects import ANN_EVICT, evict_patch
from gensched.controller.reservations import RESERVATIONS
from gensched.controller.signals import SignalError, feed_for
from gensched.controller.step import Step
from gensched.packing import Allocation
from gensched.timing.series import Series
from gensched.timing.windows import price_at

log = logging.getLogger(__name__)

OUTPUTS_METRIC = "gensched_workload_outputs_total"  # written by gensched_workloads.batch (--metrics-port)
SERVE_REQUESTS = 'max(sum by (deployment) (ray_serve_deployment_request_counter_total{{application="{app}"}}))'
PROM_TIMEOUT_S = 5.0
PROM_BACKOFF_S = 30.0  # after Prometheus failed to answer, do not ask it again for this long
CARBON_REFRESH_S = 300.0
CARBON_RETRY_S = 60.0
MAX_NOTES = 20
MAX_BREAKER_SAMPLES = 240
BUDGET_EVICTOR = "budget"

_lock = threading.Lock()
_memory: dict[str, tuple[str, str, Ledger]] = {}  # job key -> (uid, namespace, last ledger computed or read)
_prom_down: dict[str, tuple[float, str]] = {}  # url -> (monotonic time to ask again, why)
_carbon: dict[str, _Carbon] = {}  # policy name -> last carbon series fetched for accounting
_carbon_lock = threading.Lock()


class Unavailable(RuntimeError):
    """Prometheus did not answer (expected; the interval falls back and says so)."""


def expected(exc: BaseException) -> bool:
    """Errors of the world, not of the code: logged as one line, no traceback."""
    import urllib3

    from gensched.controller.kube import ApiException

    return isinstance(exc, Unavailable | SignalError | ValueError | LookupError | ApiException | OSError |
                      TimeoutError | urllib3.exceptions.HTTPError)


@dataclass
class _Carbon:
    spec_json: str
    series: Series | None = None
    fetched: float = -math.inf  # monotonic
    tried: float = -math.inf
    error: str | None = None
    origin: str = ""
    busy: bool = False


@dataclass(frozen=True)
class Gate:
    """What accounting allows the Serve autoscaler: hold scale-ups, or scale to the minimum."""

    hold: bool = False
    to_minimum: bool = False
    why: str = ""


# -- the record ---------------------------------------------------------------------------------------------

def _key(body: dict) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def ledger_of(body: dict) -> Ledger:
    """The job's record: its status merged with what this process last computed for the same object."""
    acc = (body.get("status") or {}).get("accounting") or {}
    stored = Ledger.from_dict(acc.get("ledger"))
    uid = body["metadata"].get("uid") or ""
    with _lock:
        mem = _memory.get(_key(body))
    if mem is not None and mem[0] == uid:
        return merge(stored, mem[2])
    return stored


def remember(body: dict, ledger: Ledger) -> None:
    """Keep the latest record of a job (joined with what is kept: never an older one over a newer)."""
    uid = body["metadata"].get("uid") or ""
    with _lock:
        old = _memory.get(_key(body))
        if old is not None and old[0] == uid:
            ledger = merge(old[2], ledger)
        _memory[_key(body)] = (uid, body["metadata"]["namespace"], ledger)


def forget(key: str) -> tuple[str, str, Ledger] | None:
    """The job is gone: drop and return what was known of it (its namespace budget keeps the use)."""
    with _lock:
        return _memory.pop(key, None)


# -- policy ---------------------------------------------------------------------------------------------------

def _policy_for(spec: GenerativeJobSpec | None, body: dict) -> tuple[str, SchedulingPolicySpec]:
    from gensched.controller.lifecycle import resolve_policy

    try:
        return resolve_policy(spec.policy_ref if spec else (body.get("spec") or {}).get("policyRef"))
    except LookupError:
        return "(built-in defaults)", SchedulingPolicySpec()


_specs: dict[tuple[str, str | None], SchedulingPolicySpec | None] = {}


def policy_specs() -> list[tuple[str, SchedulingPolicySpec | None, dict]]:
    """Every cached policy by name with its parsed spec (None: invalid), parsed once per resourceVersion."""
    out = []
    for p in sorted(CACHE.view("policies"), key=lambda p: p["metadata"]["name"]):
        memo = (p["metadata"]["name"], p["metadata"].get("resourceVersion"))
        if memo not in _specs:
            if len(_specs) > 1000:
                _specs.clear()
            try:
                _specs[memo] = SchedulingPolicySpec.model_validate(p.get("spec") or {})
            except ValidationError:
                _specs[memo] = None
        out.append((memo[0], _specs[memo], p))
    return out


def namespace_budgets() -> dict[tuple[str, str], tuple[str, object]]:
    """(namespace, period) -> (policy name, NamespaceBudget) over every valid policy; the first by name wins."""
    out: dict[tuple[str, str], tuple[str, object]] = {}
    for name, spec, _ in policy_specs():
        if spec is None:
            continue
        for b in spec.accounting.budgets:
            out.setdefault((b.namespace, b.period), (name, b))
    return out


def _periods(namespace: str) -> tuple[str, ...]:
    return tuple(sorted({p for ns, p in namespace_budgets() if ns == namespace}))


def prices_for(policy_name: str, policy: SchedulingPolicySpec, namespace: str, now: datetime
               ) -> tuple[Prices, list[str]]:
    """Prices, carbon signal and budget periods of the job's policy; notes on what is missing."""
    acc, timing = policy.accounting, policy.timing
    notes: list[str] = []
    electricity: Signal | None = None
    if acc.electricity_cost:
        windows, default, holidays = list(timing.off_peak_windows), timing.default_price_per_kwh, list(timing.holidays)

        def electricity(t: datetime) -> float:
            return price_at(windows, t, default, holidays)

    carbon: Signal | None = None
    if timing.carbon is not None:
        series, error = carbon_series(policy_name, policy, now)
        carbon = series if series is not None else _unknown
        if error:
            notes.append(f"carbon signal: {bounded(error, 300)}")
    prices = Prices(per_gpu_hour={p.gpu_model: p.price_per_gpu_hour for p in acc.pricing},
                    default_per_gpu_hour=acc.default_price_per_gpu_hour, electricity_per_kwh=electricity,
                    carbon_intensity=carbon, utilization=timing.gpu_utilization, periods=_periods(namespace))
    return prices, notes


def _unknown(_t: datetime) -> float:
    """A carbon signal that knows nothing (the provider failed and nothing was fetched before)."""
    return math.nan


def carbon_series(policy_name: str, policy: SchedulingPolicySpec, now: datetime) -> tuple[Series | None, str | None]:
    """The policy's recorded carbon intensity around ``now`` (fetched from its source at most every 5 minutes;
    a failure keeps the last series and is retried after a minute). Never waits for a fetch another thread
    is doing: it uses what was fetched before."""
    carbon = policy.timing.carbon
    assert carbon is not None
    spec_json = carbon.model_dump_json()
    with _carbon_lock:
        c = _carbon.get(policy_name)
        if c is None or c.spec_json != spec_json:
            c = _carbon[policy_name] = _Carbon(spec_json)
        mono = time.monotonic()
        stale = c.series is None or mono - c.fetched > CARBON_REFRESH_S or c.series.end <= now
        fetch = stale and not c.busy and mono - c.tried > (CARBON_RETRY_S if c.error else 0)
        if fetch:
            c.busy, c.tried = True, mono
    if fetch:
        try:
            source = feed_for(policy_name, carbon).source
            series = source.fetch(now - timedelta(hours=26), now + timedelta(hours=2))
            if len(series) == 0:
                raise SignalError(f"{source.name}: no carbon-intensity values around {rfc3339(now)}")
            with _carbon_lock:
                c.series, c.fetched, c.error, c.origin = series, time.monotonic(), None, source.name
        except Exception as exc:  # SignalError, a bad Secret, a provider bug: accounting goes on without it
            with _carbon_lock:
                c.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SignalError) else str(exc)
        finally:
            with _carbon_lock:
                c.busy = False
    with _carbon_lock:
        error = c.error
        if c.series is not None and c.series.end <= now - timedelta(hours=1):
            error = error or f"carbon intensity known only until {rfc3339(c.series.end)}"
        return c.series, error


def carbon_state(policy_name: str) -> tuple[Series | None, str | None, str]:
    """(series, error, origin) last fetched for a policy, without fetching."""
    with _carbon_lock:
        c = _carbon.get(policy_name)
        return (c.series, c.error, c.origin) if c else (None, None, "")


# -- Prometheus ------------------------------------------------------------------------------------------------

_clients: dict[str, object] = {}


def _query(url: str, promql: str) -> float | None:
    """One instant query summed to one number; None when it has no series. Raises Unavailable."""
    mono = time.monotonic()
    with _lock:
        down = _prom_down.get(url)
    if down is not None and mono < down[0]:
        raise Unavailable(down[1])
    try:
        from prometheus_api_client import PrometheusConnect

        client = _clients.get(url)
        if client is None:
            client = _clients[url] = PrometheusConnect(url=url, disable_ssl=True, timeout=PROM_TIMEOUT_S)
        result = client.custom_query(promql)  # type: ignore[attr-defined]
    except Exception as exc:  # connection refused, timeouts, HTTP errors, bad answers: all mean "no readings"
        why = f"Prometheus at {bounded(url, 200)} did not answer ({type(exc).__name__})"
        with _lock:
            _prom_down[url] = (mono + PROM_BACKOFF_S, why)
        raise Unavailable(why) from None
    with _lock:
        _prom_down.pop(url, None)
    for series in result or []:
        try:
            v = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if math.isfinite(v):
            return v
    return None


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass
class Readings:
    energy_joules: float | None = None
    power_watts: float | None = None
    utilization: float | None = None
    outputs: float | None = None
    notes: list[str] | None = None
    reason: str | None = None  # the first fallback in effect (condition reason)

    def note(self, reason: str, text: str) -> None:
        self.notes = [*(self.notes or []), text]
        self.reason = self.reason or reason


def _dcgm(policy: SchedulingPolicySpec, ns: str, find_pods: Callable[[], list[str]], gpus: float,
          r: Readings) -> None:
    d = policy.accounting.dcgm
    if not d.enabled or gpus <= 0:
        return
    pods = find_pods()
    url = d.prometheus_url or policy.autoscaling.prometheus_url
    if not url:
        r.note("NoPrometheus", "accounting.dcgm.enabled but no Prometheus URL (accounting.dcgm.prometheusUrl or "
                               "autoscaling.prometheusUrl): energy modelled")
        return
    if not pods:
        r.note("NoDcgmMetrics", "no running pod to match DCGM series to yet: energy modelled")
        return
    q = job_queries(ns, pods, d.pod_label, d.namespace_label)
    try:
        r.energy_joules = _query(url, q.energy_joules)
        r.power_watts = _query(url, q.power_watts)
        r.utilization = _query(url, q.utilization) if r.energy_joules is None and r.power_watts is None else None
    except Unavailable as exc:
        r.note("PrometheusUnavailable", f"{exc}: energy modelled")
        return
    if r.energy_joules is None and r.power_watts is None:
        r.note("NoDcgmMetrics", f"no DCGM series ({d.pod_label}={', '.join(pods[:3])}) in {bounded(url, 200)}: "
                                "energy modelled from TDP")


def _outputs_url(policy: SchedulingPolicySpec) -> str | None:
    return policy.autoscaling.prometheus_url or policy.accounting.dcgm.prometheus_url


# -- batch ---------------------------------------------------------------------------------------------------

def _job_pods(ns: str, jname: str) -> list[str]:
    out = []
    for pod in CACHE.view("pods"):
        m = pod.get("metadata") or {}
        if m.get("namespace") == ns and (m.get("labels") or {}).get("job-name") == jname and \
                (pod.get("status") or {}).get("phase") == "Running":
            out.append(m["name"])
    return sorted(out)


def _pod_regex(jname: str) -> str:
    """Any pod the Job controller makes for ``jname`` (generateName ``jname-`` cut to 58, plus 5 characters)."""
    return re.escape(f"{jname}-"[:58]) + "[a-z0-9]{5}"


def _batch_outputs(policy: SchedulingPolicySpec, ns: str, jname: str, r: Readings) -> None:
    url = _outputs_url(policy)
    if not url:
        return
    d = policy.accounting.dcgm
    sel = f'{d.namespace_label}="{_label(ns)}",{d.pod_label}=~"{_label(_pod_regex(jname))}"'
    try:
        r.outputs = _query(url, f"max(last_over_time({OUTPUTS_METRIC}{{{sel}}}[10m]))")
    except Unavailable as exc:
        r.note("PrometheusUnavailable", f"{exc}: outputs not read this time")


def account_batch(body: dict, job: dict, step: Step, alloc: Allocation, spec: GenerativeJobSpec | None, *,
                  final: bool = False, closing: bool = False, default_s: float = 30.0) -> float:
    """Bring a released batch job's accounting up to date (and suspend it when its budget is used up).

    ``final``: the Job ended; ``closing``: it gave its GPUs back (evicted). Returns the seconds until the
    next pass should sample (at most ``default_s``). Never raises."""
    try:
        return _account_batch(body, job, step, alloc, spec, final, closing, default_s)
    except Exception as exc:  # accounting never stops a lifecycle
        log.warning("%s: accounting failed: %s", _key(body), bounded(exc, 300), exc_info=not expected(exc))
        step.condition("Accounted", False, "AccountingFailed", f"accounting not brought up to date: "
                                                               f"{bounded(exc, 300)}")
        return default_s


def _account_batch(body: dict, job: dict, step: Step, alloc: Allocation, spec: GenerativeJobSpec | None,
                   final: bool, closing: bool, default_s: float) -> float:
    ns = body["metadata"]["namespace"]
    policy_name, policy = _policy_for(spec, body)
    interval = float(policy.accounting.interval_seconds)
    now = clock.now()
    ledger = ledger_of(body)
    if ledger.final:
        if not ((body.get("status") or {}).get("accounting") or {}).get("final"):  # its write was lost: again
            prices, notes = prices_for(policy_name, policy, ns, now)
            _write(body, step, ledger, prices, policy, notes, Readings(), "items", _job_verdict(spec, ledger), now)
        return default_s
    # sample at the interval, and when the warning threshold or the limit is due at the current spend
    interval = min(interval, _budget_horizon_s(spec, ledger, policy) or interval)
    due = final or closing or ledger.cursor is None or (now - ledger.cursor.t).total_seconds() >= interval
    if not due:
        return _next_s(ledger, now, interval, default_s)
    suspended = bool((job.get("spec") or {}).get("suspend"))
    held = 0.0 if (final or closing or suspended) else len(alloc.gpu_indices) * alloc.gpu_milli / 1000
    model = RESERVATIONS.gpu_model(alloc.node) or ((body.get("status") or {}).get("placement") or {}).get("gpuModel")
    prices, notes = prices_for(policy_name, policy, ns, now)
    gpus = len(alloc.gpu_indices) * alloc.gpu_milli / 1000
    released = _instant((body.get("status") or {}).get("releasedAt"))
    if released is not None and released <= now and (ledger.cursor is None or ledger.cursor.t < released) \
            and not closing:
        # the GPUs were held from the release on: open the interval there, not at the first pass
        ledger = advance(ledger, Sample(released, gpus=gpus, gpu_model=model), prices)
    r = Readings()
    jname = job["metadata"]["name"]
    if not (final or closing):
        _dcgm(policy, ns, lambda: _job_pods(ns, jname), held, r)
    _batch_outputs(policy, ns, jname, r)
    ledger = _first_reading(ledger, r, held)
    ledger = advance(ledger, Sample(now, gpus=held, gpu_model=model, energy_joules=r.energy_joules,
                                    power_watts=r.power_watts, utilization=r.utilization, outputs=r.outputs), prices)
    if final:
        ledger = finalize(ledger)
    verdict = _job_verdict(spec, ledger)
    _write(body, step, ledger, prices, policy, notes, r, "items", verdict, now)
    if verdict is not None:
        _job_budget_actions(body, job, step, verdict, spec, final or closing)
    every = float(policy.accounting.interval_seconds)
    return _next_s(ledger, now, min(every, _budget_horizon_s(spec, ledger, policy) or every), default_s)


def _first_reading(ledger: Ledger, r: Readings, gpus: float) -> Ledger:
    """An interval that began before the pods' first DCGM reading (the pod was starting) is charged at the
    power of that reading, the nearest measurement, rather than modelled; same GPUs only."""
    c = ledger.cursor
    if c is None or r.power_watts is None or c.energy_joules is not None or c.power_watts is not None \
            or c.gpus <= 0 or abs(c.gpus - gpus) > 1e-9:
        return ledger
    return replace(ledger, cursor=replace(c, power_watts=r.power_watts))


def _instant(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_instant(text)
    except ValueError:
        return None


def _next_s(ledger: Ledger, now: datetime, interval: float, default_s: float) -> float:
    if ledger.cursor is None:
        return min(default_s, 1.0)
    left = interval - (now - ledger.cursor.t).total_seconds()
    return max(0.5, min(default_s, clock.real_seconds(timedelta(seconds=max(0.0, left))) + 0.05))


def _budget_horizon_s(spec: GenerativeJobSpec | None, ledger: Ledger, policy: SchedulingPolicySpec) -> float | None:
    """Seconds from the last sample until the job's budget crosses warnAt or a limit at the GPUs it holds
    (GPU-hours and GPU-hour cost; gCO2 is checked at every sample), so neither is passed by a whole interval."""
    limits, c = job_limits(spec), ledger.cursor
    if limits is None or c is None or c.gpus <= 0:
        return None
    acc = policy.accounting
    price = Prices(per_gpu_hour={p.gpu_model: p.price_per_gpu_hour for p in acc.pricing},
                   default_per_gpu_hour=acc.default_price_per_gpu_hour).gpu_hour_price(c.gpu_model) or 0.0
    rate = Usage(gpu_seconds=c.gpus, gpu_cost=price * c.gpus / 3600)
    w = limits.warn_at
    warn = Limits(gpu_hours=limits.gpu_hours * w if limits.gpu_hours else None,
                  cost=limits.cost * w if limits.cost else None, gco2=limits.gco2 * w if limits.gco2 else None)
    best: float | None = None
    for lim in (warn, limits):
        left = seconds_to_exhaustion(ledger.total, lim, rate)
        if left is not None and left > 0:
            best = left if best is None else min(best, left)
    return best + 0.001 if best is not None else None


def job_limits(spec: GenerativeJobSpec | None) -> Limits | None:
    b = spec.budget if spec is not None else None
    if b is None:
        return None
    return Limits(gpu_hours=b.max_gpu_hours, cost=b.max_cost, gco2=b.max_gco2, warn_at=b.warn_at)


def _job_verdict(spec: GenerativeJobSpec | None, ledger: Ledger) -> BudgetVerdict | None:
    limits = job_limits(spec)
    return evaluate(ledger.total, limits, "job budget") if limits is not None else None


def job_budget_block(body: dict, spec: GenerativeJobSpec) -> str | None:
    """Why a job that holds no GPUs may not start: its own budget is used up (raise it to resume)."""
    if spec.budget is None:
        return None
    verdict = _job_verdict(spec, ledger_of(body))
    if verdict is not None and verdict.state == BudgetState.EXHAUSTED:
        return verdict.message.replace("raise ", "raise spec.budget.")
    return None


def _job_budget_actions(body: dict, job: dict, step: Step, verdict: BudgetVerdict, spec: GenerativeJobSpec | None,
                        ended: bool) -> None:
    old = (((body.get("status") or {}).get("accounting") or {}).get("budget") or {}).get("state")
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    telemetry.call("record_budget", ns, name, None, verdict)
    if verdict.state == BudgetState.OK:
        step.condition("BudgetExhausted", False, "WithinBudget", verdict.message)
        return
    if verdict.state == BudgetState.WARNING:
        step.condition("BudgetExhausted", False, "NearlyExhausted", verdict.message)
        if old not in (BudgetState.WARNING, BudgetState.EXHAUSTED):
            step.events.append(("Warning", "BudgetWarning", verdict.message))
        return
    msg = verdict.message.replace("raise ", "raise spec.budget.")
    if old not in (BudgetState.WARNING, BudgetState.EXHAUSTED):  # the warning always comes first
        step.events.append(("Warning", "BudgetWarning", f"job budget passed warnAt ({verdict.used_ratio:.0%} "
                                                        f"used) and is exhausted"))
    step.condition("BudgetExhausted", True, "Exhausted", msg)
    if ended or (job["metadata"].get("annotations") or {}).get(ANN_EVICT):
        return
    interruptible = bool(spec and spec.batch and spec.batch.interruptible)
    reply = kube().patch_job(ns, job["metadata"]["name"], evict_patch(BUDGET_EVICTOR, "Budget"))
    CACHE.observe("jobs", "MODIFIED", reply)
    lost = "" if interruptible else " (not interruptible: work since its last checkpoint may be redone)"
    step.events.append(("Warning", "BudgetExhausted", f"{msg}: suspending the job, it checkpoints and waits{lost}"))
    telemetry.call("record_preemption", "Budget")


# -- serve ---------------------------------------------------------------------------------------------------

def _ray_pods(ns: str, name: str) -> list[str]:
    prefix = f"{name}-raycluster"
    out = []
    for pod in CACHE.view("pods"):
        m = pod.get("metadata") or {}
        if m.get("namespace") == ns and str((m.get("labels") or {}).get("ray.io/cluster", "")).startswith(prefix) \
                and (pod.get("status") or {}).get("phase") == "Running":
            out.append(m["name"])
    return sorted(out)


def account_serve(body: dict, spec: GenerativeJobSpec, policy_name: str, policy: SchedulingPolicySpec, step: Step,
                  svc: dict, app: str, default_s: float = 10.0) -> float:
    """Bring a running Serve job's accounting and circuit breaker up to date. Never raises."""
    try:
        return _account_serve(body, spec, policy_name, policy, step, svc, app, default_s)
    except Exception as exc:  # accounting never stops serving
        log.warning("%s: accounting failed: %s", _key(body), bounded(exc, 300), exc_info=not expected(exc))
        step.condition("Accounted", False, "AccountingFailed", f"accounting not brought up to date: "
                                                               f"{bounded(exc, 300)}")
        return default_s


def _account_serve(body: dict, spec: GenerativeJobSpec, policy_name: str, policy: SchedulingPolicySpec, step: Step,
                   svc: dict, app: str, default_s: float) -> float:
    from gensched.controller.serving_gpus import held

    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    interval = float(policy.accounting.interval_seconds)
    now = clock.now()
    ledger = ledger_of(body)
    if ledger.cursor is not None and (now - ledger.cursor.t).total_seconds() < interval:
        return _next_s(ledger, now, interval, default_s)
    allocs = held(svc)
    gpus = float(len(allocs))
    model = RESERVATIONS.gpu_model(allocs[0].node) if allocs else None
    prices, notes = prices_for(policy_name, policy, ns, now)
    r = Readings()
    _dcgm(policy, ns, lambda: _ray_pods(ns, name), gpus, r)
    old = (body.get("status") or {}).get("accounting") or {}
    counter = dict(old.get("outputCounter") or {})
    url = policy.autoscaling.prometheus_url
    if url:
        try:
            raw = _query(url, SERVE_REQUESTS.format(app=_label(app)))
        except Unavailable as exc:
            raw = None
            r.note("PrometheusUnavailable", f"{exc}: requests served not read this time")
        if raw is not None:
            counter, r.outputs = monotonic(counter, raw)
    ledger = _first_reading(ledger, r, gpus)
    ledger = advance(ledger, Sample(now, gpus=gpus, gpu_model=model, energy_joules=r.energy_joules,
                                    power_watts=r.power_watts, utilization=r.utilization, outputs=r.outputs), prices)
    verdict = _job_verdict(spec, ledger)
    breaker = _breaker(body, step, policy, ledger, now, gpus, verdict)
    _write(body, step, ledger, prices, policy, notes, r, "requests", verdict, now, breaker=breaker,
           counter=counter or None)
    if verdict is not None:
        old_state = (old.get("budget") or {}).get("state")
        telemetry.call("record_budget", ns, name, None, verdict)
        if verdict.state == BudgetState.EXHAUSTED:
            step.alert("BudgetExhausted", True, "Exhausted", verdict.message.replace("raise ", "raise spec.budget."),
                       "BudgetExhausted")
        else:
            step.condition("BudgetExhausted", False,
                           "NearlyExhausted" if verdict.state == BudgetState.WARNING else "WithinBudget",
                           verdict.message)
            if verdict.state == BudgetState.WARNING and old_state not in ("Warning", "Exhausted"):
                step.events.append(("Warning", "BudgetWarning", verdict.message))
    return _next_s(ledger, now, interval, default_s)


def monotonic(counter: dict, raw: float) -> tuple[dict, float]:
    """A sum of per-replica counters made monotonic: when the sum drops, a replica left (or restarted) and
    took its count with it, not the outputs already served; the drop is added to an offset."""
    last, offset = float(counter.get("last") or 0.0), float(counter.get("offset") or 0.0)
    if raw < last:
        offset += last - raw
    return {"last": raw, "offset": offset}, raw + offset


def _breaker(body: dict, step: Step, policy: SchedulingPolicySpec, ledger: Ledger, now: datetime, gpus: float,
             verdict: BudgetVerdict | None) -> dict | None:
    cfg = policy.accounting.circuit_breaker
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if not cfg.enabled:
        return None
    old = dict(((body.get("status") or {}).get("accounting") or {}).get("circuitBreaker") or {})
    window = parse_duration(cfg.window)
    requests = ledger.total.outputs
    samples = [ServeSample(t, float(s.get("gpus") or 0), float(s.get("requests") or 0))
               for s in old.get("samples") or [] if (t := _instant(s.get("t"))) is not None and t < now]
    samples.append(ServeSample(now, gpus, requests))
    keep = [s for s in samples if s.t >= now - window]
    before = [s for s in samples if s.t < now - window]
    samples = ([before[-1]] if before else []) + keep  # the one in force at the window's start
    if len(samples) > MAX_BREAKER_SAMPLES:  # thin evenly, keeping the newest
        stride = math.ceil(len(samples) / MAX_BREAKER_SAMPLES)
        samples = samples[::-1][::stride][::-1]
    annotation = (body["metadata"].get("annotations") or {}).get(RESET_BREAKER_ANNOTATION)
    was_open = bool(old.get("open"))
    reset = annotation is not None and annotation != old.get("resetValue") and (was_open or "resetValue" in old)
    reset_at = rfc3339(now) if reset else old.get("resetAt")
    left, period_left = _namespace_budget_left(ns, now)
    v = circuit_breaker(samples, cfg.factor, window, now=now, since=_instant(reset_at), min_requests=cfg.min_requests,
                        budget_gpu_seconds_left=left, period_seconds_left=period_left)
    is_open = latch(was_open, v, reset)
    out: dict = {"open": is_open, "reason": v.reason.value if not (was_open and is_open) else old.get("reason"),
                 "message": v.message if not (was_open and is_open) else old.get("message"),
                 "samples": [{"t": rfc3339(s.t), "gpus": s.gpus, "requests": round(s.requests, 3)} for s in samples]}
    if annotation is not None:
        out["resetValue"] = annotation
    if reset_at:
        out["resetAt"] = reset_at
    if is_open:
        out["since"] = old.get("since") if was_open and old.get("since") else rfc3339(now)
    telemetry.call("record_breaker", ns, name, is_open)
    if is_open:
        held = "" if cfg.action == BreakerAction.WARN else " scale-ups are held"
        msg = (f"{out['message']}:{held or ' warning only (action Warn)'}; annotate "
               f"{RESET_BREAKER_ANNOTATION}=<new value> to reset")
        step.alert("CircuitBreakerOpen", True, out["reason"] or "SpendOutpacedOutput", msg, "CircuitBreakerOpen")
    else:
        if reset:
            step.events.append(("Normal", "CircuitBreakerReset",
                                f"circuit breaker reset by {RESET_BREAKER_ANNOTATION}"))
        step.condition("CircuitBreakerOpen", False, v.reason.value, v.message)
    return out


def _namespace_budget_left(ns: str, now: datetime) -> tuple[float | None, float | None]:
    """GPU-seconds left in the namespace's GPU-hours budget and seconds to its period's end (tightest)."""
    from gensched.controller import policy_status

    best: tuple[float | None, float | None] = (None, None)
    for use in policy_status.namespace_use(ns):
        if use.limits.gpu_hours is None:
            continue
        left = use.limits.gpu_hours * 3600 - use.usage.gpu_seconds
        if best[0] is None or left < best[0]:
            best = (left, max(0.0, (use.period_end - now).total_seconds()))
    return best


def scale_gate(body: dict, step: Step, policy: SchedulingPolicySpec) -> Gate:
    """What the accounting allows the autoscaler now: an open breaker holds scale-ups (HoldScaleUp,
    ScaleToMinimum); an exhausted budget (job's or namespace's) holds them too, and with ScaleToMinimum
    brings every operator to serve.minReplicas."""
    from gensched.controller import policy_status

    cfg = policy.accounting.circuit_breaker
    acc = step.status.get("accounting") or (body.get("status") or {}).get("accounting") or {}
    if cfg.action == BreakerAction.WARN:
        return Gate()
    exhausted = (acc.get("budget") or {}).get("state") == BudgetState.EXHAUSTED
    ns_block = policy_status.namespace_blocks().get(body["metadata"]["namespace"])
    if exhausted or ns_block:
        why = (acc.get("budget") or {}).get("message") if exhausted else ns_block
        return Gate(hold=True, to_minimum=cfg.action == BreakerAction.SCALE_TO_MINIMUM, why=f"budget: {why}")
    breaker = acc.get("circuitBreaker") or {}
    if cfg.enabled and breaker.get("open"):
        return Gate(hold=True, why=f"circuit breaker open: {breaker.get('message') or breaker.get('reason')}")
    return Gate()


# -- status ---------------------------------------------------------------------------------------------------

def _write(body: dict, step: Step, ledger: Ledger, prices: Prices, policy: SchedulingPolicySpec, notes: list[str],
           r: Readings, unit: str, verdict: BudgetVerdict | None, now: datetime, breaker: dict | None = None,
           counter: dict | None = None) -> None:
    currency = policy.accounting.currency
    acc = to_status(ledger, prices, currency, unit if ledger.total.outputs > 0 or r.outputs is not None else None,
                    verdict)
    if "outputs" not in acc:  # no output counter ever read: no ratios (not "0 per kWh")
        for k in ("costPerOutput", "gpuSecondsPerOutput", "outputsPerKWh"):
            acc.pop(k, None)
    live = [*notes, *(r.notes or [])]
    if r.outputs is None and ledger.cursor is not None and ledger.cursor.outputs is None:
        live.append(f"no outputs reported yet ({OUTPUTS_METRIC if unit == 'items' else 'requests served'} not in "
                    "Prometheus): per-output ratios unset")
    all_notes = [bounded(n, 300) for n in dict.fromkeys([*acc.get("notes", []), *live])][:MAX_NOTES]
    acc["notes"] = all_notes
    acc["updatedAt"] = rfc3339(now)
    if breaker is not None:
        acc["circuitBreaker"] = breaker
    if counter is not None:
        acc["outputCounter"] = counter
    old = (body.get("status") or {}).get("accounting") or {}
    for k in old:
        if k not in acc:
            acc[k] = None  # merge patch: remove what no longer applies
    step.status["accounting"] = acc
    remember(body, ledger)
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    telemetry.call("record_job_accounting", ns, name, ledger, currency, unit)
    src = acc.get("energySource") or "Modelled"
    model = ledger.cursor.gpu_model if ledger.cursor is not None else None
    unpriced = not prices.priced or (model is not None and prices.gpu_hour_price(model) is None)
    reason = r.reason or ("NoPrices" if unpriced else None) or src
    summary = (f"{acc.get('gpuHours', 0):.4g} GPU-hours, {acc.get('energyKWh', 0):.4g} kWh ({src.lower()})"
               + (f", {acc['cost']:.4g} {currency}" if acc.get("cost") is not None else "")
               + (f", {acc['gCO2']:.4g} gCO2" if acc.get("gCO2") is not None else ""))
    step.condition("Accounted", True, reason, "; ".join([summary, *all_notes]))


def close(body: dict, job: dict, step: Step, alloc: Allocation, spec: GenerativeJobSpec | None) -> None:
    """The job gave its GPUs back (evicted): end the interval now, so waiting time is not charged."""
    account_batch(body, job, step, alloc, spec, closing=True)

