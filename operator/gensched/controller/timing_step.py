"""The timing part of a batch job's reconcile: when it runs, what that is expected to emit,
pausing interruptible jobs between their slots, and the energy actually used at the end.

All state lives in the GenerativeJob's status (plannedStart, plannedSlots, decidedAt,
carbon.*), so a restarted operator carries on with the same plan.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import numpy as np

from gensched.api import GenerativeJobSpec, SchedulingPolicySpec
from gensched.api.durations import parse_duration, parse_instant, resolve_deadline, rfc3339
from gensched.api.policy import TimingMode
from gensched.controller import clock, job_cache, telemetry
from gensched.controller.kube import kube
from gensched.controller.reservations import RESERVATIONS
from gensched.controller.signals import SignalError, feed_for
from gensched.controller.step import Step
from gensched.observe import metrics
from gensched.timing import decide_start
from gensched.timing.energy import grams, job_power_kw
from gensched.timing.planner import DEFAULT_RUN, TimingDecision, latest_end
from gensched.timing.series import Series

log = logging.getLogger(__name__)
ANN_RUN_NOW = "gensched.io/run-now"



def _gpus(spec: GenerativeJobSpec) -> float:
    return float(spec.resources.gpus)


def planned_slots(status: dict) -> list[tuple[datetime, datetime]]:
    return [(parse_instant(x["start"]), parse_instant(x["end"])) for x in status.get("plannedSlots") or []]


def job_window(body: dict, spec: GenerativeJobSpec) -> tuple[datetime | None, timedelta | None]:
    created = parse_instant(body["metadata"]["creationTimestamp"])
    b = spec.batch
    deadline = resolve_deadline(b.deadline, created) if b and b.deadline else None
    estimated = parse_duration(b.estimated_duration) if b and b.estimated_duration else None
    return deadline, estimated


def decide_when(body: dict, spec: GenerativeJobSpec, policy_name: str, policy: SchedulingPolicySpec,
                step: Step, t: datetime) -> datetime:
    """The planned start (``t`` or later). Writes plannedStart and, for CarbonAware, the plan
    and its expected emissions; announces a new or changed plan with one Event."""
    status = body.get("status") or {}
    annotations = body["metadata"].get("annotations") or {}
    old_text = status.get("plannedStart")
    old = parse_instant(old_text) if old_text else None
    if annotations.get(ANN_RUN_NOW) == "true":
        if old is None or old > t:
            step.events.append(("Normal", "RunNow", f"{ANN_RUN_NOW} is set: starting now"))
        step.status["plannedStart"] = rfc3339(t)
        step.status["plannedSlots"] = []
        return t
    deadline, estimated = job_window(body, spec)
    timing = policy.timing
    if timing.mode != TimingMode.CARBON_AWARE:
        if old is not None:
            return old
        decision = decide_start(t, timing, deadline, estimated)
        step.status["plannedStart"] = rfc3339(decision.start)
        _warn(step, decision, deadline)
        if decision.deferred:
            step.events.append(("Normal", "Deferred", f"deferred until {rfc3339(decision.start)} "
                                                      f"({timing.mode} policy)"))
        return decision.start
    if old is not None and old <= t and status.get("decidedAt"):
        return old  # its time has come: do not re-plan a job that is due
    return _plan_carbon(body, spec, policy_name, policy, step, t, deadline, estimated, old)


def _plan_carbon(body: dict, spec: GenerativeJobSpec, policy_name: str, policy: SchedulingPolicySpec,
                 step: Step, t: datetime, deadline: datetime | None, estimated: timedelta | None,
                 old: datetime | None) -> datetime:
    timing = policy.timing
    status = body.get("status") or {}
    run = estimated or DEFAULT_RUN
    until = latest_end(t, timing, deadline, run)
    assert timing.carbon is not None
    forecast: Series | None = None
    degraded: str | None = None
    origin = str(timing.carbon.provider)
    try:
        result = feed_for(policy_name, timing.carbon).get(t, max(until, t + run))
        forecast, degraded, origin = result.forecast, result.degraded, result.origin
    except SignalError as exc:
        degraded = str(exc)
    interruptible = bool(spec.batch and spec.batch.interruptible)
    usable = capacity_mask(forecast, t, _gpus(spec), body) if forecast is not None else None
    decision = decide_start(t, timing, deadline, estimated, forecast, interruptible, degraded, usable)
    _signal_condition(step, degraded, origin)
    _warn(step, decision, deadline)
    s = step.status
    s["plannedStart"] = rfc3339(decision.start)
    s["plannedSlots"] = [{"start": rfc3339(a), "end": rfc3339(b)} for a, b in decision.slots] if interruptible else []
    if not status.get("decidedAt"):
        s["decidedAt"] = rfc3339(t)
    power = job_power_kw(_gpus(spec), _gpu_model(spec), timing.gpu_utilization)
    hours = run / timedelta(hours=1)
    carbon = dict(status.get("carbon") or {})
    carbon.update(signal=origin, powerKw=round(power, 4))
    if decision.expected_intensity is not None:
        baseline = carbon.get("baselineIntensity") or decision.now_intensity
        expected = grams(power, hours, decision.expected_intensity)
        saving = grams(power, hours, float(baseline) - decision.expected_intensity)
        carbon.update(baselineIntensity=round(float(baseline), 2),
                      expectedIntensity=round(decision.expected_intensity, 2),
                      expectedGCO2=round(expected, 1), expectedSavingGCO2=round(saving, 1),
                      expectedSavingPct=round(100 * saving / max(expected + saving, 1e-9), 2))
    s["carbon"] = carbon
    if decision.deferred and decision.start != old:
        pct = carbon.get("expectedSavingPct")
        what = (f"expected saving {carbon['expectedSavingGCO2']:.0f} gCO2 ({pct:.1f}%)" if pct is not None
                else decision.reason)
        reason = "Deferred" if old is None else "Replanned"
        if old is None:
            metrics.DEFERRED.inc()
        step.events.append(("Normal", reason, f"deferred until {rfc3339(decision.start)}: {what}"))
    return decision.start


def _gpu_model(spec: GenerativeJobSpec) -> str | None:
    models = spec.resources.gpu_models
    return models[0] if models else RESERVATIONS.common_gpu_model()


def _warn(step: Step, decision: TimingDecision, deadline: datetime | None) -> None:
    if decision.warning:
        kind = "DeadlineAtRisk" if deadline and "deadline" in decision.warning else "TimingDegraded"
        step.alert(kind, True, "Timing", decision.warning, "Timing")


def _signal_condition(step: Step, degraded: str | None, origin: str) -> None:
    if degraded:
        step.alert("SignalAvailable", False, "SignalDegraded", degraded, "SignalDegraded")
    else:
        step.condition("SignalAvailable", True, "SignalFresh", f"carbon intensity from {origin}")


def capacity_mask(forecast: Series, t: datetime, need: float, body: dict) -> np.ndarray | None:
    """Slots (from the one containing ``t``) where the GPUs this job needs are still free after
    the plans of other deferred jobs and the expected runs of placed ones."""
    total = RESERVATIONS.snapshot()[1] / 1000
    if total <= 0:
        return None
    first = forecast.index_at(t)
    n = len(forecast) - first
    used = np.zeros(n)
    me = (body["metadata"]["namespace"], body["metadata"]["name"])
    # Only plans made before mine bind me (then by name): two jobs never chase each other's plan.
    my_rank = ((body.get("status") or {}).get("decidedAt") or rfc3339(t), me)
    for gj in job_cache.jobs():
        if (gj["metadata"]["namespace"], gj["metadata"]["name"]) == me:
            continue
        st = gj.get("status") or {}
        rank = (st.get("decidedAt") or "~", (gj["metadata"]["namespace"], gj["metadata"]["name"]))
        if st.get("phase") == "Deferred" and rank > my_rank:
            continue
        try:
            other = GenerativeJobSpec.model_validate(gj.get("spec") or {})
        except Exception:
            continue
        for a, b in _busy(st, other):
            i0 = max(0, forecast.index_at(a) - first)
            i1 = min(n, forecast.index_ceil(b) - first)
            if i1 > i0:
                used[i0:i1] += _gpus(other)
    return total - used >= need


def _busy(st: dict, spec: GenerativeJobSpec) -> list[tuple[datetime, datetime]]:
    """When another job is expected to hold GPUs: its plan, or from release for its estimate."""
    phase = st.get("phase")
    run = parse_duration(spec.batch.estimated_duration) if spec.batch and spec.batch.estimated_duration \
        else DEFAULT_RUN
    if phase == "Deferred" and st.get("plannedSlots"):
        return planned_slots(st)
    if phase == "Deferred" and st.get("plannedStart"):
        return [(parse_instant(st["plannedStart"]), parse_instant(st["plannedStart"]) + run)]
    if phase in ("Placed", "Running") and st.get("releasedAt"):
        return [(parse_instant(st["releasedAt"]), parse_instant(st["releasedAt"]) + run)]
    return []


def follow_slots(body: dict, job: dict, step: Step) -> None:
    """Interruptible plans: suspend the Job between planned slots and resume it inside one
    (the reservation stays, so a resume always finds its GPUs)."""
    status = body.get("status") or {}
    slots = planned_slots(status)
    if len(slots) < 2:
        return
    t = clock.now()
    meta = body["metadata"]
    if (meta.get("annotations") or {}).get(ANN_RUN_NOW) == "true":
        slots = [(t, t + timedelta(days=3650))]  # forced: run through
    inside = any(a <= t < b for a, b in slots)
    later = [a for a, _ in slots if a > t]
    suspended = bool((job.get("spec") or {}).get("suspend"))
    if not inside and later and not suspended:
        kube().patch_job(meta["namespace"], meta["name"], {"spec": {"suspend": True}})
        msg = f"paused until {rfc3339(later[0])}, the next planned low-carbon slot"
        step.condition("Suspended", True, "BetweenSlots", msg)
        step.events.append(("Normal", "Suspended", msg))
    elif suspended and (inside or not later):
        kube().patch_job(meta["namespace"], meta["name"], {"spec": {"suspend": False}})
        step.condition("Suspended", False, "InSlot", "running in a planned slot")
        step.events.append(("Normal", "Resumed", "resumed for a planned slot"))


def account_energy(body: dict, spec: GenerativeJobSpec, step: Step) -> None:
    """At the end of a CarbonAware job: energy from the modelled power and the time it ran
    (release to completion on the operator's clock, minus paused gaps), emissions on the
    signal's recorded values, and the saving against the same run at the decision time."""
    status = body.get("status") or {}
    carbon = dict(status.get("carbon") or {})
    if not carbon.get("powerKw") or not status.get("releasedAt") or not status.get("decidedAt"):
        return
    try:
        from gensched.controller.lifecycle import resolve_policy

        policy_name, policy = resolve_policy(spec.policy_ref)
        if policy.timing.carbon is None:
            return
        source = feed_for(policy_name, policy.timing.carbon).source
        start, end = parse_instant(status["releasedAt"]), clock.now()
        slots = planned_slots(status) or [(start, end)]
        spans = [(max(a, start), min(b, end)) for a, b in slots if min(b, end) > max(a, start)] or [(start, end)]
        active = sum((b - a for a, b in spans), timedelta())
        decided = parse_instant(status["decidedAt"])
        series = source.fetch(min(start, decided) - timedelta(hours=1), end + timedelta(hours=1))
        actual = _mean(series, spans)
        baseline = _mean(series, [(decided, decided + active)])
    except (SignalError, LookupError) as exc:
        log.warning("energy accounting skipped for %s: %s", meta_key(body), exc)
        return
    placed_model = (status.get("placement") or {}).get("gpuModel")
    power = job_power_kw(_gpus(spec), placed_model, policy.timing.gpu_utilization) if placed_model \
        else float(carbon["powerKw"])
    carbon["powerKw"] = round(power, 4)
    energy = power * active / timedelta(hours=1)
    carbon.update(energyKWh=round(energy, 4), actualGCO2=round(energy * actual, 1),
                  actualSavingGCO2=round(energy * (baseline - actual), 1))
    step.status["carbon"] = carbon
    telemetry.carbon_saving(carbon["actualSavingGCO2"])


def _mean(series: Series, spans: list[tuple[datetime, datetime]]) -> float:
    vals: list[float] = []
    for a, b in spans:
        i0, i1 = max(0, series.index_at(a)), min(len(series), series.index_ceil(b))
        vals.extend(series.values[i0:max(i0 + 1, i1)].tolist())
    if not vals:
        raise SignalError("no recorded intensity for the run")
    return float(np.mean(vals))


def meta_key(body: dict) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"
