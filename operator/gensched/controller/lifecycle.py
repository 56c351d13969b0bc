"""Lifecycle of a GenerativeJob, level-triggered: every call looks at the API and moves one step.

Batch: validate -> resolve policy -> own a suspended Job -> decide when (timing)
-> decide where (packing) and reserve -> release the Job pinned to the node ->
mirror its progress. Serve: validate -> own a RayService -> mirror its health.
Each decision is written to status and announced by one Event (not repeated
while nothing changes).
"""

from __future__ import annotations

import logging
from datetime import datetime

import kopf
import yaml
from pydantic import ValidationError

from gensched.api import GenerativeJobSpec, Phase, SchedulingPolicySpec, format_validation_error
from gensched.api.durations import rfc3339
from gensched.api.generativejob import TERMINAL_PHASES, JobMode
from gensched.autoscale import render_rayservice
from gensched.autoscale.feasibility import GpuType, check_serve
from gensched.autoscale.profiles import ProfileError
from gensched.controller import serve_profile, serving_gpus
from gensched.controller.kube import ApiException, kube
from gensched.controller.objects import (
    ANN_PLACEMENT,
    MANAGED_BY,
    batch_job,
    decode_allocation,
    job_finished,
    owner_reference,
    release_patch,
)
from gensched.controller.reservations import RESERVATIONS
from gensched.controller.step import Step, now
from gensched.controller.timing_step import account_energy, decide_when, follow_slots
from gensched.packing import Allocation
from gensched.packing.requests import request_for

log = logging.getLogger(__name__)


def key_of(body: dict) -> str:
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def resolve_policy(name: str | None) -> tuple[str, SchedulingPolicySpec]:
    """The named policy, else the one marked default, else built-in defaults. Raises LookupError."""
    policies = {p["metadata"]["name"]: p for p in kube().list_policies()}
    if name:
        if name not in policies:
            raise LookupError(f"SchedulingPolicy '{name}' not found: create it or remove spec.policyRef")
        chosen = policies[name]
    else:
        defaults = sorted(n for n, p in policies.items() if (p.get("spec") or {}).get("default"))
        if not defaults:
            return "(built-in defaults)", SchedulingPolicySpec()
        chosen = policies[defaults[0]]
        if len(defaults) > 1:
            log.warning("several default SchedulingPolicies %s; using %s", defaults, defaults[0])
    try:
        return chosen["metadata"]["name"], SchedulingPolicySpec.model_validate(chosen.get("spec") or {})
    except ValidationError as exc:
        problems = "; ".join(str(e) for e in format_validation_error(exc))
        raise LookupError(f"SchedulingPolicy '{chosen['metadata']['name']}' is invalid: {problems}") from exc


def reconcile(body: dict, patch: kopf.Patch | None = None, spec_changed: bool = False) -> None:
    """One level-triggered pass over a GenerativeJob.

    ``spec_changed`` is set for edits: a fixed spec leaves Invalid and is admitted afresh.
    """
    status = body.get("status") or {}
    phase = status.get("phase")
    if phase in {p.value for p in TERMINAL_PHASES} and not (spec_changed and phase == Phase.INVALID):
        return
    step = Step(body)
    try:
        spec = GenerativeJobSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        problems = format_validation_error(exc)
        text = "; ".join(str(p) for p in problems)
        step.condition("Valid", False, "InvalidSpec", text)
        step.phase(Phase.INVALID, f"invalid spec: {text}", ("InvalidSpec", text), warn=True)
        step.flush(patch)
        return
    step.condition("Valid", True, "SpecAccepted", "spec is valid")
    step.status["gpuMemoryGiB"] = spec.gpu_memory_gib()
    try:
        policy_name, policy = resolve_policy(spec.policy_ref)
    except LookupError as exc:
        step.condition("PolicyResolved", False, "PolicyNotFound", str(exc))
        step.phase(Phase.PENDING, str(exc), ("PolicyNotFound", str(exc)), warn=True)
        step.flush(patch)
        return
    step.status["policy"] = policy_name
    step.condition("PolicyResolved", True, "PolicyFound", f"using SchedulingPolicy {policy_name}")
    if spec.mode == JobMode.SERVE:
        _serve(body, spec, policy, step, spec_changed)
    else:
        _batch(body, spec, policy_name, policy, step, spec_changed)
    step.flush(patch)


def _batch(body: dict, spec: GenerativeJobSpec, policy_name: str, policy: SchedulingPolicySpec, step: Step,
           spec_changed: bool = False) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    step.status["jobName"] = name
    job = kube().get_job(ns, name)
    if job is None:
        try:
            kube().create_job(ns, batch_job(name, ns, spec, body))
        except ApiException as exc:
            if exc.status != 409:
                raise
        job = kube().get_job(ns, name)
        assert job is not None
    placed = (job["metadata"].get("annotations") or {}).get(ANN_PLACEMENT)
    if placed:
        alloc = decode_allocation(placed)
        if not job_finished(job):
            RESERVATIONS.adopt(alloc)
        if spec_changed:
            msg = ("spec changed after placement: a released job keeps its GPUs and container; "
                   "delete and re-create the GenerativeJob to apply the change")
            step.condition("SpecApplied", False, "ChangedAfterPlacement", msg)
            step.events.append(("Warning", "SpecChangeIgnored", msg))
        mirror_job(body, job, step, alloc)
        return
    t = now()
    planned = decide_when(body, spec, policy_name, policy, step, t)
    if planned > t:
        carbon = step.status.get("carbon") or {}
        saving = (f": expected saving {carbon['expectedSavingGCO2']:.0f} gCO2 ({carbon['expectedSavingPct']:.1f}%)"
                  if carbon.get("expectedSavingPct") is not None else f" ({policy.timing.mode} policy)")
        step.phase(Phase.DEFERRED, f"deferred until {rfc3339(planned)}{saving}")
        return
    outcome = RESERVATIONS.place(request_for(key_of(body), spec), policy.packing.strategy)
    if not isinstance(outcome, Allocation):
        step.condition("Placed", False, "Unschedulable", outcome.reason)
        step.phase(Phase.PENDING, f"waiting for GPUs: {outcome.reason}", ("Unschedulable", outcome.reason),
                   warn=True)
        return
    try:
        kube().patch_job(ns, name, release_patch(outcome))
    except Exception:
        RESERVATIONS.release(outcome.key)  # nothing durable was written: give the GPUs back
        raise
    where = _describe(outcome)
    step.status["releasedAt"] = rfc3339(t)
    step.status["placement"] = _placement(outcome, spec)
    step.condition("Placed", True, "GPUsReserved", where)
    step.phase(Phase.PLACED, f"placed {where}", ("Placed", f"placed {where} by {policy.packing.strategy}"))


def _describe(alloc: Allocation) -> str:
    gpus = ",".join(map(str, alloc.gpu_indices))
    share = "" if alloc.gpu_milli == 1000 else f" ({alloc.gpu_milli / 1000:g} of the GPU)"
    return f"on node {alloc.node}, GPU {gpus}{share}"


def _placement(alloc: Allocation, spec: GenerativeJobSpec) -> dict:
    return {"node": alloc.node, "gpuIndices": list(alloc.gpu_indices), "gpuMilli": alloc.gpu_milli,
            "gpuModel": RESERVATIONS.gpu_model(alloc.node), "gpuMemoryGiB": spec.gpu_memory_gib()}


def mirror_job(body: dict, job: dict, step: Step, alloc: Allocation) -> None:
    """Copy a placed Job's progress into the GenerativeJob; free the GPUs when it ends."""
    js = job.get("status") or {}
    step.status["placement"] = _placement(alloc, GenerativeJobSpec.model_validate(body["spec"]))
    if js.get("startTime"):
        step.status["startedAt"] = js["startTime"]
    done = job_finished(job)
    spec = GenerativeJobSpec.model_validate(body["spec"])
    if not done:
        follow_slots(body, job, step)
    if done:
        account_energy(body, spec, step)
        finished = js.get("completionTime") or rfc3339(now())
        step.status["finishedAt"] = finished
        if js.get("startTime"):
            start = datetime.fromisoformat(js["startTime"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(finished.replace("Z", "+00:00"))
            gpus = len(alloc.gpu_indices) * alloc.gpu_milli / 1000
            step.status["gpuHours"] = round(max(0.0, (end - start).total_seconds()) / 3600 * gpus, 6)
        RESERVATIONS.release(alloc.key)
        if done == "Complete":
            step.condition("Finished", True, "Succeeded", "the Job completed")
            step.phase(Phase.SUCCEEDED, "completed", ("Succeeded", f"completed; GPUs {_describe(alloc)} released"))
        else:
            step.condition("Finished", True, "Failed", "the Job failed")
            step.phase(Phase.FAILED, "the Job failed: see `kubectl describe job`",
                       ("Failed", f"the Job failed; GPUs {_describe(alloc)} released"), warn=True)
    elif js.get("active") or js.get("ready"):
        step.phase(Phase.RUNNING, f"running {_describe(alloc)}", ("Running", f"running {_describe(alloc)}"))
    else:
        step.phase(Phase.PLACED, f"placed {_describe(alloc)}")


def _serve(body: dict, spec: GenerativeJobSpec, policy: SchedulingPolicySpec, step: Step,
           spec_changed: bool = False) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    step.status["rayServiceName"] = name
    svc = kube().get_rayservice(ns, name)
    manifest = render_rayservice(name, ns, spec, {**MANAGED_BY, "gensched.io/job": name})
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
            return
    else:
        step.condition("Feasible", True, "Servable", "the model and SLOs fit the cluster's GPUs")
    if svc is not None and spec_changed:
        allocs, why = serving_gpus.place(ns, name, serving_gpus.worker_gpus(deployments),
                                         policy.packing.strategy, serving_gpus.held(svc), spec)
        if why:
            step.events.append(("Warning", "SpecChangeBlocked", f"not applied: {why}"))
        else:
            meta_patch: dict = {}
            serving_gpus.pin(manifest["spec"], meta_patch, allocs)
            if svc.get("spec") != manifest["spec"]:
                kube().patch_rayservice(ns, name, {"metadata": meta_patch, "spec": manifest["spec"]})
                step.events.append(("Normal", "RayServiceUpdated",
                                    f"updated RayService {name}: KubeRay rolls the Serve application to the new spec"))
    if svc is None:
        manifest["metadata"]["ownerReferences"] = [owner_reference(body)]
        need = serving_gpus.worker_gpus(deployments)
        allocs, why = serving_gpus.place(ns, name, need, policy.packing.strategy, [], spec)
        if why:
            step.condition("Placed", False, "Unschedulable", why)
            step.phase(Phase.PENDING, f"waiting for GPUs: {why}", ("Unschedulable", why), warn=True)
            return
        serving_gpus.pin(manifest["spec"], manifest["metadata"], allocs)
        try:
            kube().create_rayservice(ns, manifest)
        except ApiException as exc:
            for a in allocs:  # nothing durable was written: give the GPUs back
                RESERVATIONS.release(a.key)
            if exc.status == 404:
                msg = "the RayService API (ray.io/v1) is not installed: install the KubeRay operator"
                step.condition("Ready", False, "KubeRayMissing", msg)
                step.phase(Phase.PENDING, msg, ("KubeRayMissing", msg), warn=True)
                return
            if exc.status != 409:
                raise
        if allocs:
            where = ", ".join(f"{a.node}/GPU {a.gpu_indices[0]}" for a in allocs)
            step.condition("Placed", True, "GPUsReserved", f"Ray workers on {where}")
            step.events.append(("Normal", "Placed", f"{len(allocs)} GPU(s) for Ray workers on {where} by "
                                                    f"{policy.packing.strategy}"))
        msg = "RayService created; waiting for KubeRay to bring the Serve application up"
        step.condition("Ready", False, "Deploying", msg)
        step.phase(Phase.PENDING, msg, ("RayServiceCreated", f"created RayService {name}"))
        return
    state = (svc.get("status") or {}).get("serviceStatus")
    if state == "Running":
        step.condition("Ready", True, "ServeRunning", "the Serve application is running")
        step.phase(Phase.RUNNING, "serving", ("Serving", "the Serve application is running"))
    else:
        msg = f"RayService {name} is {state or 'starting'}"
        step.condition("Ready", False, "Deploying", msg)
        step.phase(Phase.PENDING, msg)


def on_job_event(job: dict) -> None:
    """A Job we own changed: mirror it into its GenerativeJob (from the Job watch)."""
    labels = job["metadata"].get("labels") or {}
    name = labels.get("gensched.io/job")
    placed = (job["metadata"].get("annotations") or {}).get(ANN_PLACEMENT)
    if not name or not placed:
        return
    gj = kube().get_generativejob(job["metadata"]["namespace"], name)
    if gj is None or (gj.get("status") or {}).get("phase") in {p.value for p in TERMINAL_PHASES}:
        if job_finished(job):
            RESERVATIONS.release(decode_allocation(placed).key)
        return
    step = Step(gj)
    mirror_job(gj, job, step, decode_allocation(placed))
    step.flush(None)


def autoscale_pass(body: dict, patch: kopf.Patch | None = None) -> None:
    """One autoscaling pass for a running Serve job (see controller/autoscaling.py)."""
    from gensched.controller.autoscaling import autoscale

    try:
        spec = GenerativeJobSpec.model_validate(body.get("spec") or {})
        _, policy = resolve_policy(spec.policy_ref)
    except (ValidationError, LookupError):
        return  # the reconcile pass reports these
    step = Step(body)
    autoscale(body, spec, policy, step)
    step.flush(patch)
