"""kopf handlers: thin glue from watch events to the lifecycle and the cluster picture."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from pydantic import BaseModel, ValidationError

from gensched import GROUP, VERSION
from gensched.api import GenerativeJobSpec, SchedulingPolicySpec, format_validation_error
from gensched.controller import job_cache, lifecycle, serving_gpus
from gensched.controller.kube import kube
from gensched.controller.reservations import RESERVATIONS
from gensched.observe import metrics

GJ = (GROUP, VERSION, "generativejobs")
RETRY_SECONDS = float(os.environ.get("GENSCHED_RETRY_SECONDS", "3"))
AUTOSCALE_SECONDS = float(os.environ.get("GENSCHED_AUTOSCALE_SECONDS", "10"))
WAITING = {None, "Pending", "Deferred"}  # placed jobs follow their Job's watch events instead


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    settings.persistence.finalizer = "gensched.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="gensched.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="gensched.io", key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # only explicit decisions and warnings become Events
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    settings.scanning.disabled = True
    port = int(os.environ.get("GENSCHED_WEBHOOK_PORT") or 0)
    if port:
        settings.admission.server = kopf.WebhookServer(
            addr=os.environ.get("GENSCHED_WEBHOOK_ADDR") or None, port=port,
            host=os.environ.get("GENSCHED_WEBHOOK_HOST") or None,
            insecure=os.environ.get("GENSCHED_WEBHOOK_INSECURE") == "1",
            certfile=os.environ.get("GENSCHED_WEBHOOK_CERTFILE") or None,
            pkeyfile=os.environ.get("GENSCHED_WEBHOOK_PKEYFILE") or None,
            cafile=os.environ.get("GENSCHED_WEBHOOK_CAFILE") or None)
        settings.admission.managed = "gensched.io"
    workers = [a for svc in kube().list_owned_rayservices() for a in serving_gpus.held(svc)]
    conflicts = RESERVATIONS.rebuild(kube().list_nodes(), kube().list_owned_jobs(), workers)
    job_cache.prime(kube().list_generativejobs())
    allocated, total, frag, nodes = RESERVATIONS.snapshot()
    metrics.update_cluster(allocated, total, frag, nodes)
    logger.info("cluster picture rebuilt: %d GPU nodes, %d/%d milli-GPU reserved, %d conflicts",
                nodes, allocated, total, len(conflicts))


def _publish() -> None:
    metrics.update_cluster(*RESERVATIONS.snapshot())


def _admission(model: type[BaseModel], spec: Any) -> None:
    """Reject at apply time what the controller would mark Invalid (same messages, naming the field)."""
    try:
        model.model_validate(dict(spec or {}))
    except ValidationError as exc:
        raise kopf.AdmissionError("; ".join(str(e) for e in format_validation_error(exc)), code=422) from None


def validate_job(spec: kopf.Spec, **_: Any) -> None:
    _admission(GenerativeJobSpec, spec)


def validate_policy(spec: kopf.Spec, **_: Any) -> None:
    _admission(SchedulingPolicySpec, spec)


# kopf refuses to start with validation handlers but no webhook server, so they exist only when it is on.
# ignore_failures: when the operator is down, applies still go through and the controller validates later.
if os.environ.get("GENSCHED_WEBHOOK_PORT"):
    kopf.on.validate(*GJ, id="validate-generativejob", ignore_failures=True)(validate_job)
    kopf.on.validate(GROUP, VERSION, "schedulingpolicies", id="validate-schedulingpolicy",
                     ignore_failures=True)(validate_policy)


@kopf.on.resume(*GJ)
@kopf.on.create(*GJ)
def admit(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    lifecycle.reconcile(dict(body), patch)
    _publish()


@kopf.on.update(*GJ, field="spec")
def respec(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """An edited spec: re-admit a fixed Invalid job, roll serving forward, warn about placed batch jobs."""
    lifecycle.reconcile(dict(body), patch, spec_changed=True)
    _publish()


@kopf.timer(*GJ, interval=RETRY_SECONDS, initial_delay=RETRY_SECONDS,
            when=lambda status, **_: status.get("phase") in WAITING)
def retry(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Pending and deferred jobs are re-tried: capacity frees up, planned starts arrive."""
    lifecycle.reconcile(dict(body), patch)
    _publish()


def _between_slots(status: dict, **_: Any) -> bool:
    return status.get("phase") in ("Placed", "Running") and len(status.get("plannedSlots") or []) > 1


@kopf.timer(*GJ, interval=RETRY_SECONDS, initial_delay=RETRY_SECONDS, when=_between_slots)
def follow_plan(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Interruptible jobs with a multi-slot plan: pause and resume at slot boundaries."""
    lifecycle.reconcile(dict(body), patch)


def _serving(spec: dict, status: dict, **_: Any) -> bool:
    return spec.get("mode") == "Serve" and status.get("phase") == "Running"


@kopf.timer(*GJ, interval=AUTOSCALE_SECONDS, initial_delay=AUTOSCALE_SECONDS, when=_serving)
def scale_operators(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Per-operator autoscaling of running Serve jobs (the policy's intervalSeconds applies inside)."""
    lifecycle.autoscale_pass(dict(body), patch)


@kopf.on.delete(*GJ)
def free(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    meta = body["metadata"]
    if (body.get("spec") or {}).get("mode") == "Serve":
        serving_gpus.release_all(meta["namespace"], meta["name"],
                                 kube().get_rayservice(meta["namespace"], meta["name"]))
    released = RESERVATIONS.release(lifecycle.key_of(dict(body)))
    if released is not None:
        logger.info("released GPUs %s on %s", released.gpu_indices, released.node)
    _publish()


@kopf.on.event(*GJ)
def mirror(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Keep the operator's view of all GenerativeJobs current (capacity-aware plans read it)."""
    job_cache.observe(type, dict(body))


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": "gensched"})
def job_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type in (None, "ADDED", "MODIFIED"):
        lifecycle.on_job_event(dict(body))
        _publish()


@kopf.on.event("", "v1", "nodes")
def node_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        RESERVATIONS.remove_node(body["metadata"]["name"])
    else:
        RESERVATIONS.upsert_node(dict(body))
    _publish()


@kopf.on.event("ray.io", "v1", "rayservices", labels={"app.kubernetes.io/managed-by": "gensched"})
def rayservice_changed(body: kopf.Body, **_: Any) -> None:
    name = (body["metadata"].get("labels") or {}).get("gensched.io/job")
    gj = kube().get_generativejob(body["metadata"]["namespace"], name) if name else None
    if gj is not None:
        lifecycle.reconcile(gj, None)
