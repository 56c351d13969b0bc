"""The per-operator autoscaler for Serve jobs: Prometheus -> decide -> patch the RayService.

Every pass (kopf timer, honouring ``autoscaling.intervalSeconds``): read per-deployment load
from Prometheus, decide replicas per model operator (``autoscale.policy``), write the new
``num_replicas`` into the RayService's ``serveConfigV2`` (and enough GPU workers), explain each
change in an Event and in status. No metrics: keep the replicas, set ``MetricsAvailable=False``
and back off (interval x 2^failures, at most 10 minutes).
"""

from __future__ import annotations

import copy
import math
from datetime import timedelta

import yaml

from gensched.api import GenerativeJobSpec, SchedulingPolicySpec
from gensched.api.durations import parse_instant, rfc3339
from gensched.api.policy import Granularity
from gensched.autoscale.policy import Change, Limits, OperatorState, Settings, decide
from gensched.autoscale.profiles import ProfileError
from gensched.autoscale.rayservice import INGRESS
from gensched.controller import clock, serve_profile, serving_gpus
from gensched.controller.kube import kube
from gensched.controller.step import Step
from gensched.observe import metrics
from gensched.observe.serve_metrics import MetricsUnavailable, observe

MAX_BACKOFF_S = 600


def _limits(ns: str, spec: GenerativeJobSpec, default_target: float, deployments: list[dict], step: Step,
            auto: dict) -> dict[str, Limits]:
    """Per-operator limits: from the job's measured profile when it has one, else the policy's target.

    A profile that cannot be used (missing, incomplete, SLO out of reach) falls back to the policy's
    target with ProfileApplied=False and one Warning, rather than freezing the replicas.
    """
    assert spec.serve is not None
    lo, hi = spec.serve.min_replicas, spec.serve.max_replicas
    names = [d["name"] for d in deployments]
    try:
        found = serve_profile.targets(ns, spec, deployments)
    except ProfileError as exc:
        msg = f"{exc}; sizing every operator for {default_target:g} requests in flight (the policy's target)"
        step.alert("ProfileApplied", False, "ProfileInvalid", msg, "ProfileInvalid")
        found = None
    if found is None:
        auto["sizing"] = {n: {"targetOngoing": default_target, "source": "policy"} for n in names}
        return {n: Limits(lo, hi, default_target) for n in names}
    assert spec.serve.profile is not None
    step.condition("ProfileApplied", True, "Profiled",
                   f"operators sized from ConfigMap {spec.serve.profile.config_map}: " + ", ".join(
                       f"{t.name} {t.target_ongoing} in flight within {t.budget_ms:.1f} ms" for t in found.values()))
    auto["sizing"] = {n: {"targetOngoing": t.target_ongoing, "latencyBudgetMs": round(t.budget_ms, 2),
                          "source": "profile"} for n, t in found.items()}
    return {n: Limits(lo, hi, float(t.target_ongoing), t.budget_ms) for n, t in found.items()}



def _gated(body: dict, spec: GenerativeJobSpec, policy: SchedulingPolicySpec, step: Step, current: dict[str, int],
           changes: list[Change], states: dict[str, OperatorState], before: dict[str, float]) -> list[Change]:
    """Apply accounting's gate: an open circuit breaker or an exhausted budget holds scale-ups (scale-downs
    the load allows still happen, so the SLO is kept); with action ScaleToMinimum an exhausted budget brings
    every operator to serve.minReplicas."""
    from gensched.controller.accounting_step import scale_gate

    assert spec.serve is not None
    gate = scale_gate(body, step, policy)
    if gate.to_minimum:
        lo = spec.serve.min_replicas
        return [Change(n, cur, lo, gate.why) for n, cur in current.items() if cur != lo]
    if not gate.hold:
        if any(c.get("type") == "ScaleUpHeld" and c.get("status") == "True" for c in step.conditions):
            step.condition("ScaleUpHeld", False, "Accounting", "scale-ups allowed again")
        return changes
    held = [c for c in changes if c.new > c.old]
    for c in held:  # not applied: the cool-down does not start
        states[c.name].last_change = before.get(c.name, -math.inf)
    if held:
        what = ", ".join(f"{c.name} {c.old} -> {c.new}" for c in held)
        step.alert("ScaleUpHeld", True, "Accounting", f"scaling {what} held: {gate.why}", "ScaleUpHeld")
    else:
        step.condition("ScaleUpHeld", False, "Accounting", f"no scale-up wanted; {gate.why}")
    return [c for c in changes if c.new <= c.old]


def autoscale(body: dict, spec: GenerativeJobSpec, policy: SchedulingPolicySpec, step: Step) -> None:
    assert spec.serve is not None
    cfg = policy.autoscaling
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    status = body.get("status") or {}
    auto = dict(status.get("autoscaling") or {})
    now = clock.now()
    if not cfg.prometheus_url:
        step.condition("MetricsAvailable", False, "NoPrometheus",
                       "autoscaling.prometheusUrl is not set in the SchedulingPolicy: replicas stay as deployed")
        return
    due = auto.get("nextAttempt") or auto.get("lastEvaluated")
    if due:
        wait = timedelta(seconds=cfg.interval_seconds) if not auto.get("nextAttempt") else timedelta(0)
        if now < parse_instant(due) + wait:
            return
    svc = kube().get_rayservice(ns, name)
    if svc is None:
        return
    serve_config = yaml.safe_load(svc["spec"].get("serveConfigV2") or "{}") or {}
    app = (serve_config.get("applications") or [{}])[0]
    deployments = [d for d in app.get("deployments") or [] if d.get("name") != INGRESS]
    current = {d["name"]: int(d.get("num_replicas", 1)) for d in deployments}
    auto["lastEvaluated"] = rfc3339(now)
    try:
        observed = observe(cfg.prometheus_url, app.get("name", name), list(current))
    except MetricsUnavailable as exc:
        failures = int(auto.get("failures", 0)) + 1
        backoff = min(cfg.interval_seconds * 2 ** failures, MAX_BACKOFF_S)
        auto.update(failures=failures, nextAttempt=rfc3339(now + timedelta(seconds=backoff)))
        msg = f"{exc}; keeping replicas {current}, next try in {backoff:.0f} s"
        step.alert("MetricsAvailable", False, "NoMetrics", msg, "MetricsUnavailable")
        step.status["autoscaling"] = auto
        step.status["operatorReplicas"] = current
        return
    auto.update(failures=0, nextAttempt=None)
    step.condition("MetricsAvailable", True, "Scraped", f"serving metrics from {cfg.prometheus_url}")
    t = now.timestamp()
    states = {k: OperatorState(v.get("lastChange", -math.inf), [tuple(x) for x in v.get("recent", [])])
              for k, v in (auto.get("states") or {}).items()}
    limits = _limits(ns, spec, cfg.target_ongoing_requests, deployments, step, auto)
    settings = Settings(cfg.cooldown_seconds, cfg.scale_down_stabilization_seconds, cfg.scale_up_step)
    if cfg.granularity == Granularity.MODEL and current:
        # Model-level: every operator follows the busiest one, so the model scales as one unit.
        busiest = max(observed.values(), key=lambda o: o.ongoing or 0.0)
        observed = dict.fromkeys(current, busiest)
        # ... and a model replica is sized by its most constrained operator (the smallest target)
        tightest = min(limits.values(), key=lambda lim: lim.target_ongoing)
        limits = dict.fromkeys(current, tightest)
    before = {k: v.last_change for k, v in states.items()}
    changes = _gated(body, spec, policy, step, current, decide(t, current, observed, limits, states, settings),
                     states, before)
    auto["states"] = {k: {"lastChange": v.last_change if math.isfinite(v.last_change) else None,
                          "recent": [list(x) for x in v.recent]} for k, v in states.items()}
    for k in auto["states"]:
        if auto["states"][k]["lastChange"] is None:
            auto["states"][k].pop("lastChange")
    new = dict(current)
    for c in changes:
        new[c.name] = c.new
    if changes:
        for d in deployments:
            d["num_replicas"] = new[d["name"]]
        allocs, why = serving_gpus.place(ns, name, serving_gpus.worker_gpus(deployments), policy.packing.strategy,
                                         serving_gpus.held(svc), spec)
        if why:  # the packing engine has no room: keep the replicas, say why
            msg = f"scaling {', '.join(f'{c.name} {c.old} -> {c.new}' for c in changes)} blocked: {why}"
            step.events.append(("Warning", "ScaleUpBlocked", msg))
            auto["lastDecision"] = f"{rfc3339(now)} {msg}"
            step.status["operatorReplicas"] = current
            step.status["autoscaling"] = auto
            return
        cluster = copy.deepcopy(svc["spec"].get("rayClusterConfig") or {})
        patch: dict = {"metadata": {}, "spec": {"serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
                                                "rayClusterConfig": cluster}}
        serving_gpus.pin(patch["spec"], patch["metadata"], allocs)
        kube().patch_rayservice(ns, name, patch)
    for c in changes:
        msg = f"scaled model operator {c.name} {c.old} -> {c.new}: {c.reason}"
        step.events.append(("Normal", "ScaledOperator", msg))
        auto["lastDecision"] = f"{rfc3339(now)} {msg}"  # the Event is counted once, when Step posts it
    metrics.set_operator_replicas(ns, name, new)
    step.status["operatorReplicas"] = new
    step.status["autoscaling"] = auto
