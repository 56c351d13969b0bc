"""Lifecycle of one GenerativeJob, level-triggered: each pass reads the caches and moves one step.

Batch: validate -> resolve policy and priority -> own a suspended Job -> decide when (timing) ->
due: hand the job to the scheduling cycle (which decides where, see ``scheduler.py``) -> mirror the
released Job's progress -> account at the end. An evicted Job (preempted or moved) gives its GPUs
back once its pods are gone and the job queues again. Serve: validate -> own a RayService -> mirror
its health -> per-operator autoscaling. Placement is never decided here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import yaml
from pydantic import ValidationError

from gensched.api import GenerativeJobSpec, Phase, SchedulingPolicySpec, format_validation_error
from gensched.api.durations import parse_duration, parse_instant, rfc3339
from gensched.api.errors import bounded
from gensched.api.generativejob import TERMINAL_PHASES, JobMode
from gensched.autoscale import render_rayservice
from gensched.autoscale.feasibility import GpuType, check_serve
from gensched.autoscale.profiles import ProfileError
from gensched.controller import accounting_step, serve_profile, serving_gpus, telemetry
from gensched.controller.cache import CACHE
from gensched.controller.kube import ApiException, kube, outcome_unknown
from gensched.controller.objects import (
    ANN_EVICT,
    ANN_PLACEMENT,
    MANAGED_BY,
    batch_job,
    decode_allocation,
    job_finished,
    job_name,
    label_value,
    owner_reference,
    requeue_patch,
)
from gensched.controller.reservations import RESERVATIONS
from gensched.controller.step import Step, now
from gensched.controller.timing_step import account_energy, decide_when, follow_slots, job_window
from gensched.packing import Allocation
from gensched.packing.requests import request_for
from gensched.sched import Toleration, WaitingJob

log = logging.getLogger(__name__)
LEGACY_FINALIZER = "gensched.io/finalizer"  # written by versions that freed GPUs on delete; now removed


def key_of(body: dict) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


@dataclass
class Outcome:
    """What a pass leaves for the loop: a job for the scheduling cycle, and when to look again.

    ``step``: for a job handed to the cycle, the pass's status changes, not yet written: the cycle's decision
    (placed, or why it waits) completes them and writes once (one status write per decision, not two).
    """

    waiting: WaitingJob | None = None
    requeue_s: float | None = None
    step: Step | None = None


# -- policies and priorities ------------------------------------------------------------------------------

_BUILTIN: list[SchedulingPolicySpec] = []
_PARSED: dict[tuple, SchedulingPolicySpec] = {}  # (name, uid, generation, resourceVersion) -> parsed spec


def _parsed(policy: dict) -> SchedulingPolicySpec:
    """A policy's spec validated once per version: every pass (and cycle) resolves a policy, and building a
    SchedulingPolicySpec costs about half a millisecond. The instances are shared: read-only."""
    meta = policy["metadata"]
    key = (meta.get("name"), meta.get("uid"), meta.get("generation"),
           None if meta.get("generation") else meta.get("resourceVersion"))
    spec = _PARSED.get(key)
    if spec is None:
        spec = SchedulingPolicySpec.model_validate(policy.get("spec") or {})
        if len(_PARSED) > 1000:
            _PARSED.clear()
        _PARSED[key] = spec
    return spec


def resolve_policy(name: str | None) -> tuple[str, SchedulingPolicySpec]:
    """The named policy, else the one marked default, else built-in defaults (shared instances: read-only).
    Raises LookupError."""
    policies = {p["metadata"]["name"]: p for p in CACHE.view("policies")}
    if name:
        if name not in policies:
            raise LookupError(f"spec.policyRef: SchedulingPolicy '{bounded(name, 80)}' not found: create it or "
                              "remove spec.policyRef")
        chosen = policies[name]
    else:
        defaults = sorted(n for n, p in policies.items() if (p.get("spec") or {}).get("default") is True)
        if not defaults:
            if not _BUILTIN:
                _BUILTIN.append(SchedulingPolicySpec())
            return "(built-in defaults)", _BUILTIN[0]
        if len(defaults) > 1:
            raise LookupError(f"SchedulingPolicies {', '.join(defaults[:5])} are all marked default: unmark all "
                              "but one (spec.default), or set spec.policyRef on the job")
        chosen = policies[defaults[0]]
    try:
        return chosen["metadata"]["name"], _parsed(chosen)
    except ValidationError as exc:
        problems = "; ".join(str(e) for e in format_validation_error(exc))
        raise LookupError(f"SchedulingPolicy '{chosen['metadata']['name']}' is invalid: {problems}") from exc


def resolve_priority(spec: GenerativeJobSpec) -> int:
    """spec.priority, else the PriorityClass's value, else the global default class, else 0. Raises LookupError."""
    if spec.priority is not None:
        return spec.priority
    classes = {p["metadata"]["name"]: p for p in CACHE.view("priorityclasses")}
    if spec.priority_class_name:
        pc = classes.get(spec.priority_class_name)
        if pc is None:
            raise LookupError(f"spec.priorityClassName: PriorityClass '{spec.priority_class_name}' not found: create "
                              "it (kubectl create priorityclass NAME --value=N) or remove the field")
        return int(pc.get("value") or 0)
    for pc in classes.values():
        if pc.get("globalDefault"):
            return int(pc.get("value") or 0)
    return 0


# -- one pass ---------------------------------------------------------------------------------------------

def reconcile(body: dict) -> Outcome:
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        _drop_legacy_finalizer(body)
        return Outcome()
    status = body.get("status") or {}
    phase = status.get("phase")
    edited = (meta.get("generation") or 0) > (status.get("observedGeneration") or 0)
    if phase in {p.value for p in TERMINAL_PHASES} and not (edited and phase == Phase.INVALID):
        return Outcome()
    step = Step(body)
    try:
        spec = GenerativeJobSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return _invalid(body, step, exc)
    step.condition("Valid", True, "SpecAccepted", "spec is valid")
    step.status["gpuMemoryGiB"] = spec.gpu_memory_gib()
    try:
        policy_name, policy = resolve_policy(spec.policy_ref)
    except LookupError as exc:
        step.condition("PolicyResolved", False, "PolicyNotFound", str(exc))
        if not _placed_job(body):
            step.phase(Phase.PENDING, str(exc), ("PolicyNotFound", str(exc)), warn=True)
            step.flush()
            return Outcome(requeue_s=30)
        policy_name, policy = "(built-in defaults)", SchedulingPolicySpec()  # a running job keeps running
    step.status["policy"] = policy_name
    step.condition("PolicyResolved", True, "PolicyFound", f"using SchedulingPolicy {policy_name}")
    if spec.mode == JobMode.SERVE:
        out = _serve(body, spec, policy, step, edited)
    else:
        out = _batch(body, spec, policy_name, policy, step, edited)
    if out.waiting is not None:
        out.step = step  # written with the cycle's decision (see Outcome)
        return out
    step.flush()
    return out


def _drop_legacy_finalizer(body: dict) -> None:
    fins = body["metadata"].get("finalizers") or []
    if LEGACY_FINALIZER in fins:
        rest = [f for f in fins if f != LEGACY_FINALIZER]
        kube().custom.patch_namespaced_custom_object(
            "gensched.io", "v1alpha1", body["metadata"]["namespace"], "generativejobs", body["metadata"]["name"],
            {"metadata": {"finalizers": rest, "resourceVersion": body["metadata"].get("resourceVersion")}},
            _request_timeout=kube().t)


def _placed_job(body: dict) -> dict | None:
    job = CACHE.get("jobs", f"{body['metadata']['namespace']}/{job_name(body['metadata']['name'])}")
    if job and (job["metadata"].get("annotations") or {}).get(ANN_PLACEMENT):
        return job
    return None


def _invalid(body: dict, step: Step, exc: ValidationError) -> Outcome:
    text = "; ".join(str(p) for p in format_validation_error(exc))
    job = _placed_job(body)
    if job is not None:  # an edit of a released job: keep following what runs, say the edit is ignored
        msg = f"the edited spec is invalid and is ignored while the job runs: {text}"
        step.condition("Valid", False, "InvalidSpec", msg)
        step.condition("SpecApplied", False, "InvalidEdit", msg)
        if not any(c.get("type") == "SpecApplied" and c.get("reason") == "InvalidEdit"
                   for c in (body.get("status") or {}).get("conditions") or []):
            step.events.append(("Warning", "InvalidSpec", msg))
        _mirror(body, job, step, decode_allocation(job["metadata"]["annotations"][ANN_PLACEMENT]), None)
        step.flush()
        return Outcome()
    step.condition("Valid", False, "InvalidSpec", text)
    step.phase(Phase.INVALID, f"invalid spec: {text}", ("InvalidSpec", text), warn=True)
    step.flush()
    return Outcome()


# -- batch ------------------------------------------------------------------------------------------------

def _batch(body: dict, spec: GenerativeJobSpec, policy_name: str, policy: SchedulingPolicySpec, step: Step,
           edited: bool) -> Outcome:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    jname = job_name(name)
    step.status["jobName"] = jname
    job = CACHE.get("jobs", f"{ns}/{jname}")
    if job is None:
        job = _create_job(ns, jname, spec, body)
        if job is None:
            step.phase(Phase.PENDING, "creating its Job", None)
            return Outcome(requeue_s=1)
    annotations = job["metadata"].get("annotations") or {}
    if annotations.get(ANN_PLACEMENT):
        alloc = decode_allocation(annotations[ANN_PLACEMENT])
        if annotations.get(ANN_EVICT):
            return _evicting(body, job, step, alloc)
        if edited and (body.get("status") or {}).get("phase") in ("Placed", "Running"):
            msg = ("spec changed after placement: a released job keeps its GPUs and container; "
                   "delete and re-create the GenerativeJob to apply the change")
            step.condition("SpecApplied", False, "ChangedAfterPlacement", msg)
            step.events.append(("Warning", "SpecChangeIgnored", msg))
        return _mirror(body, job, step, alloc, spec)
    blocked = _budget_gate(body, spec, step)
    if blocked is not None:
        return blocked
    try:
        priority = resolve_priority(spec)
    except LookupError as exc:
        step.condition("PolicyResolved", False, "PriorityClassNotFound", str(exc))
        step.phase(Phase.PENDING, str(exc), ("PriorityClassNotFound", str(exc)), warn=True)
        return Outcome(requeue_s=30)
    t = now()
    planned = decide_when(body, spec, policy_name, policy, step, t)
    if planned > t:
        carbon = step.status.get("carbon") or {}
        saving = (f": expected saving {carbon['expectedSavingGCO2']:.0f} gCO2 ({carbon['expectedSavingPct']:.1f}%)"
                  if carbon.get("expectedSavingPct") is not None else f" ({policy.timing.mode} policy)")
        step.phase(Phase.DEFERRED, f"deferred until {rfc3339(planned)}{saving}")
        return Outcome(requeue_s=min(5.0, max(0.5, (planned - t).total_seconds())))
    return Outcome(waiting=waiting_job(body, spec, policy, priority, t))


def _budget_gate(body: dict, spec: GenerativeJobSpec, step: Step) -> Outcome | None:
    """A job whose own budget is used up holds no GPUs and waits (Pending, BudgetExhausted) until raised."""
    try:
        why = accounting_step.job_budget_block(body, spec)
    except Exception as exc:  # accounting never stops a lifecycle
        log.warning("%s: budget not checked: %s", key_of(body), bounded(exc, 300))
        return None
    conds = {c.get("type"): c for c in (body.get("status") or {}).get("conditions") or []}
    if why is None:
        if (conds.get("BudgetExhausted") or {}).get("status") == "True":
            step.condition("BudgetExhausted", False, "BudgetRaised", "the budget allows more: queued again")
            step.events.append(("Normal", "BudgetRaised", "the budget was raised: the job queues again and resumes "
                                                          "from its checkpoint"))
        return None
    step.condition("BudgetExhausted", True, "Exhausted", why)
    queue = dict((body.get("status") or {}).get("queue") or {})
    queue.update(reason="BudgetExhausted", waitingFor=bounded(why, 512))
    queue.pop("position", None)
    queue.pop("reservedNode", None)
    step.status["queue"] = queue
    step.phase(Phase.PENDING, f"budget exhausted: {why}", ("BudgetExhausted", why), warn=True)
    return Outcome(requeue_s=5)


def waiting_job(body: dict, spec: GenerativeJobSpec, policy: SchedulingPolicySpec, priority: int,
                t: datetime) -> WaitingJob:
    status = body.get("status") or {}
    queue = status.get("queue") or {}
    queued = queue.get("queuedAt") or body["metadata"].get("creationTimestamp") or rfc3339(t)
    deadline, estimated = job_window(body, spec)
    latest = None
    if deadline is not None:
        margin = parse_duration(policy.timing.safety_margin)
        latest = (deadline - (estimated or timedelta(0)) - margin).timestamp()
    b = spec.batch
    return WaitingJob(
        key=key_of(body), request=request_for(key_of(body), spec), namespace=body["metadata"]["namespace"],
        priority=priority, queued_at=parse_instant(queued).timestamp(), latest_start=latest,
        duration_s=estimated.total_seconds() if estimated else None,
        interruptible=bool(b and b.interruptible), strategy=policy.packing.strategy,
        tolerations=tuple(Toleration(x.key, x.operator, x.value, x.effect) for x in spec.tolerations),
        nominated_node=queue.get("reservedNode"))


def _create_job(ns: str, jname: str, spec: GenerativeJobSpec, body: dict) -> dict | None:
    """Create the suspended Job; any doubt (409, lost reply) is settled by reading it back."""
    try:
        reply = kube().create_job(ns, batch_job(jname, ns, spec, body))
        CACHE.observe("jobs", "ADDED", reply)
        return reply
    except ApiException as exc:
        if exc.status not in (409,) and not outcome_unknown(exc):
            raise
    except Exception as exc:
        if not outcome_unknown(exc):
            raise
    try:
        job = kube().get_job(ns, jname)
    except Exception as exc:
        log.warning("%s/%s: Job state unknown (%s); retrying", ns, jname, bounded(exc, 200))
        return None
    if job is not None:
        CACHE.observe("jobs", "MODIFIED", job)
    return job


def _evicting(body: dict, job: dict, step: Step, alloc: Allocation) -> Outcome:
    """A preempted or moved job: suspended; once no pod runs, its GPUs are given back and it queues again."""
    import json

    meta = job["metadata"]
    ns, jname = meta["namespace"], meta["name"]
    try:
        mark = json.loads(meta["annotations"][ANN_EVICT])
        by, reason = str(mark.get("by", "?")), str(mark.get("reason", "Preempted"))
    except (ValueError, TypeError, AttributeError):
        by, reason = "?", "Preempted"
    if not (job.get("spec") or {}).get("suspend"):
        _patch_job(ns, jname, {"spec": {"suspend": True}})
        return Outcome(requeue_s=1)
    if _pods_running(job):
        why = "budget exhausted" if reason == "Budget" else f"{reason} for {by}"
        step.phase(Phase.RUNNING if (body.get("status") or {}).get("phase") == "Running" else Phase.PLACED,
                   f"suspending ({why}): waiting for its pods to stop after checkpointing")
        return Outcome(requeue_s=1)
    spec = _spec_or_none(body)
    accounting_step.close(body, job, step, alloc, spec)  # waiting time is not charged
    if not _patch_job(ns, jname, requeue_patch()):
        return Outcome(requeue_s=1)
    queue = dict((body.get("status") or {}).get("queue") or {})
    queue["preemptions"] = int(queue.get("preemptions") or 0) + 1
    queue.pop("reservedNode", None)
    step.status["queue"] = queue
    step.status["placement"] = None
    if reason == "Budget":  # stays Pending until the budget is raised (see _budget_gate)
        why = (accounting_step.job_budget_block(body, spec) if spec is not None else None) or "budget exhausted"
        queue.update(reason="BudgetExhausted", waitingFor=bounded(why, 512))
        queue.pop("position", None)
        step.condition("Placed", False, "BudgetExhausted", f"suspended: {why}")
        step.condition("BudgetExhausted", True, "Exhausted", why)
        step.phase(Phase.PENDING, f"budget exhausted: {why}",  # what _budget_gate says: no second Event
                   ("Suspended", f"budget exhausted: GPUs {_describe(alloc)} given back; it resumes from its "
                                 "checkpoint when the budget is raised"), warn=True)
        return Outcome(requeue_s=1)
    what = "moved to defragment the cluster" if reason == "Defragment" else f"preempted by {by}"
    step.condition("Placed", False, reason, f"{what}; queued again")
    step.phase(Phase.PENDING, f"{what}; queued again, resumes from its checkpoint",
               ("Requeued", f"{what}: GPUs {_describe(alloc)} given back; it resumes from its checkpoint"))
    return Outcome(requeue_s=0.2)


def _spec_or_none(body: dict) -> GenerativeJobSpec | None:
    try:
        return GenerativeJobSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None


def _pods_running(job: dict) -> bool:
    if int((job.get("status") or {}).get("active") or 0) > 0:
        return True
    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    for pod in CACHE.view("pods"):
        m = pod.get("metadata") or {}
        if m.get("namespace") == ns and (m.get("labels") or {}).get("job-name") == name and \
                (pod.get("status") or {}).get("phase") in ("Pending", "Running"):
            return True
    return False


def _patch_job(ns: str, name: str, patch: dict) -> bool:
    try:
        CACHE.observe("jobs", "MODIFIED", kube().patch_job(ns, name, patch))
        return True
    except Exception as exc:
        log.warning("Job %s/%s not patched (%s); retrying", ns, name, bounded(exc, 200))
        return False


def _describe(alloc: Allocation) -> str:
    gpus = ",".join(map(str, alloc.gpu_indices))
    share = "" if alloc.gpu_milli == 1000 else f" ({alloc.gpu_milli / 1000:g} of the GPU)"
    return f"on node {alloc.node}, GPU {gpus}{share}"


def placement_status(alloc: Allocation) -> dict:
    return {"node": alloc.node, "gpuIndices": list(alloc.gpu_indices), "gpuMilli": alloc.gpu_milli,
            "gpuModel": RESERVATIONS.gpu_model(alloc.node), "gpuMemoryGiB": alloc.gpu_memory_gib}


def _mirror(body: dict, job: dict, step: Step, alloc: Allocation, spec: GenerativeJobSpec | None) -> Outcome:
    """Copy a released Job's progress into the GenerativeJob; at the end account for what it used."""
    js = job.get("status") or {}
    step.status["placement"] = placement_status(alloc)
    if js.get("startTime"):
        step.status["startedAt"] = js["startTime"]
    done = job_finished(job)
    if not done:
        if spec is not None:
            try:
                follow_slots(body, job, step)
            except Exception as exc:
                log.warning("%s: slot following failed: %s", key_of(body), bounded(exc, 300))
        if js.get("active") or js.get("ready"):
            step.phase(Phase.RUNNING, f"running {_describe(alloc)}", ("Running", f"running {_describe(alloc)}"))
        else:
            step.phase(Phase.PLACED, f"placed {_describe(alloc)}")
        requeue = 5 if len((body.get("status") or {}).get("plannedSlots") or []) > 1 else 30
        return Outcome(requeue_s=accounting_step.account_batch(body, job, step, alloc, spec, default_s=requeue))
    accounting_step.account_batch(body, job, step, alloc, spec, final=True)
    if spec is not None:
        try:
            account_energy(body, spec, step)
        except Exception as exc:  # accounting never stops a lifecycle
            log.warning("%s: energy accounting failed: %s", key_of(body), bounded(exc, 300))
            step.condition("Accounted", False, "AccountingFailed", f"energy not accounted: {bounded(exc, 300)}")
    finished = js.get("completionTime") or rfc3339(now())
    step.status["finishedAt"] = finished
    if js.get("startTime"):
        try:
            start, end = parse_instant(js["startTime"]), parse_instant(finished)
            gpus = len(alloc.gpu_indices) * alloc.gpu_milli / 1000
            step.status["gpuHours"] = round(max(0.0, (end - start).total_seconds()) / 3600 * gpus, 6)
        except ValueError:
            pass
    if done == "Complete":
        step.condition("Finished", True, "Succeeded", "the Job completed")
        step.phase(Phase.SUCCEEDED, "completed", ("Succeeded", f"completed; GPUs {_describe(alloc)} released"))
    else:
        step.condition("Finished", True, "Failed", "the Job failed")
        step.phase(Phase.FAILED, "the Job failed: see `kubectl describe job`",
                   ("Failed", f"the Job failed; GPUs {_describe(alloc)} released"), warn=True)
    return Outcome()


# -- serve ------------------------------------------------------------------------------------------------

def _serve(body: dict, spec: GenerativeJobSpec, policy: SchedulingPolicySpec, step: Step, edited: bool) -> Outcome:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    step.status["rayServiceName"] = name
    svc = CACHE.get("rayservices", f"{ns}/{name}")
    manifest = render_rayservice(name, ns, spec, {**MANAGED_BY, "gensched.io/job": label_value(name)})
    deployments = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]["deployments"]
    problems = [(p.reason, p.message) for p in check_serve(spec, [GpuType(m, g) for m, g in RESERVATIONS.gpu_types()])]
    try:
        serve_profile.targets(ns, spec, deployments)
    except ProfileError as exc:
        problems.append(("ProfileInvalid", str(exc)))
    if problems:
        msg = "; ".join(m for _, m in problems)
        step.condition("Feasible", False, problems[0][0], msg)
        if svc is None:  # nothing half-deployed: wait (bigger GPUs may join) with the reason in status
            step.phase(Phase.PENDING, msg, (problems[0][0], msg), warn=True)
            return Outcome(requeue_s=30)
    else:
        step.condition("Feasible", True, "Servable", "the model and SLOs fit the cluster's GPUs")
    if svc is not None and edited:
        allocs, why = serving_gpus.place(ns, name, serving_gpus.worker_gpus(deployments),
                                         policy.packing.strategy, serving_gpus.held(svc), spec)
        if why:
            step.events.append(("Warning", "SpecChangeBlocked", f"not applied: {why}"))
        else:
            meta_patch: dict = {}
            serving_gpus.pin(manifest["spec"], meta_patch, allocs)
            if svc.get("spec") != manifest["spec"]:
                CACHE.observe("rayservices", "MODIFIED",
                              kube().patch_rayservice(ns, name, {"metadata": meta_patch, "spec": manifest["spec"]}))
                step.events.append(("Normal", "RayServiceUpdated",
                                    f"updated RayService {name}: KubeRay rolls the Serve application to the new spec"))
    if svc is None:
        from gensched.controller.policy_status import namespace_blocks

        block = namespace_blocks().get(ns)
        if block:  # a namespace over its budget starts no new work
            step.condition("Placed", False, "BudgetExhausted", block)
            step.phase(Phase.PENDING, f"waiting for budget: {block}", ("BudgetExhausted", block), warn=True)
            return Outcome(requeue_s=5)
        return _deploy(body, manifest, deployments, spec, policy, step)
    state = (svc.get("status") or {}).get("serviceStatus")
    if state == "Running":
        step.condition("Ready", True, "ServeRunning", "the Serve application is running")
        step.phase(Phase.RUNNING, "serving", ("Serving", "the Serve application is running"))
        apps = (yaml.safe_load((svc.get("spec") or {}).get("serveConfigV2") or "{}") or {}).get("applications") or [{}]
        due = accounting_step.account_serve(body, spec, str(step.status.get("policy") or ""), policy, step, svc,
                                            str(apps[0].get("name") or name))
        _autoscale(body, spec, policy, step)
        return Outcome(requeue_s=max(1.0, min(policy.autoscaling.interval_seconds, 10, due)))
    msg = f"RayService {name} is {state or 'starting'}"
    step.condition("Ready", False, "Deploying", msg)
    step.phase(Phase.PENDING, msg)
    return Outcome(requeue_s=2)


def _deploy(body: dict, manifest: dict, deployments: list[dict], spec: GenerativeJobSpec,
            policy: SchedulingPolicySpec, step: Step) -> Outcome:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    manifest["metadata"]["ownerReferences"] = [owner_reference(body)]
    need = serving_gpus.worker_gpus(deployments)
    allocs, why = serving_gpus.place(ns, name, need, policy.packing.strategy, [], spec)
    if why:
        step.condition("Placed", False, "Unschedulable", why)
        step.phase(Phase.PENDING, f"waiting for GPUs: {why}", ("Unschedulable", why), warn=True)
        return Outcome(requeue_s=3)
    serving_gpus.pin(manifest["spec"], manifest["metadata"], allocs)
    try:
        CACHE.observe("rayservices", "ADDED", kube().create_rayservice(ns, manifest))
    except ApiException as exc:
        if exc.status == 404:
            msg = "the RayService API (ray.io/v1) is not installed: install the KubeRay operator"
            step.condition("Ready", False, "KubeRayMissing", msg)
            step.phase(Phase.PENDING, msg, ("KubeRayMissing", msg), warn=True)
            return Outcome(requeue_s=30)
        if exc.status != 409 and not outcome_unknown(exc):
            raise
        svc = kube().get_rayservice(ns, name)  # settle the doubt by reading back
        if svc is None:
            return Outcome(requeue_s=1)
        CACHE.observe("rayservices", "MODIFIED", svc)
    if allocs:
        where = ", ".join(f"{a.node}/GPU {a.gpu_indices[0]}" for a in allocs)
        step.condition("Placed", True, "GPUsReserved", f"Ray workers on {where}")
        step.events.append(("Normal", "Placed", f"{len(allocs)} GPU(s) for Ray workers on {where} by "
                                                f"{policy.packing.strategy}"))
    msg = "RayService created; waiting for KubeRay to bring the Serve application up"
    step.condition("Ready", False, "Deploying", msg)
    step.phase(Phase.PENDING, msg, ("RayServiceCreated", f"created RayService {name}"))
    return Outcome(requeue_s=1)


def _autoscale(body: dict, spec: GenerativeJobSpec, policy: SchedulingPolicySpec, step: Step) -> None:
    from gensched.controller.autoscaling import autoscale

    try:
        autoscale(body, spec, policy, step)
    except Exception as exc:  # autoscaling problems never stop serving
        log.warning("%s: autoscaling pass failed: %s", key_of(body), bounded(exc, 300))
        telemetry.decision("AutoscaleFailed")
