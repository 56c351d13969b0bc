"""kopf handlers: watches that keep the caches current and wake the loop, the webhook, the probe.

No handler here writes to the API: kopf only watches (``on.event`` handlers need no finalizers or
progress annotations), so a standby replica is silent and the loop (``loop.py``), run by the Lease
holder, is the one writer.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from pydantic import BaseModel, ValidationError

from gensched import GROUP, VERSION
from gensched.api import GenerativeJobSpec, SchedulingPolicySpec, format_validation_error
from gensched.api.errors import bounded
from gensched.controller.cache import CACHE
from gensched.controller.leader import LeaderElector
from gensched.controller.loop import Loop, relist
from gensched.controller.picture import build as build_picture
from gensched.controller.signals import operator_namespace

GJ = (GROUP, VERSION, "generativejobs")
MANAGED = {"app.kubernetes.io/managed-by": "gensched"}
_state: dict[str, Any] = {}


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base. kopf builds one on every watch event (a deep copy of the object, and a diff with the
    last one) for change-detecting handlers (on.create/update/resume) and timers; gensched registers none, only
    on.event watches, so at thousands of objects that was a large part of the operator's CPU for nothing.
    Registering a change-detecting handler would need the default storage back."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: Any, essence: Any) -> None:
        return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    settings.posting.level = logging.ERROR  # Events come from the loop; kopf reports only its own failures
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.scanning.disabled = True
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.execution.max_workers = 4
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
    relist()  # the caches start full: nothing is decided on a partial picture
    elector = LeaderElector(
        namespace=os.environ.get("GENSCHED_LEASE_NAMESPACE") or operator_namespace(),
        name=os.environ.get("GENSCHED_LEASE_NAME", "gensched-leader"),
        duration=_env_float("GENSCHED_LEASE_SECONDS", 10.0), retry=_env_float("GENSCHED_LEASE_RETRY_SECONDS", 2.0),
        enabled=os.environ.get("GENSCHED_LEADER_ELECTION", "1") != "0")
    loop = Loop(elector, period=_env_float("GENSCHED_RETRY_SECONDS", 2.0),
                resync=_env_float("GENSCHED_RESYNC_SECONDS", 30.0))
    import threading

    threading.Thread(target=elector.run, name="gensched-lease", daemon=True).start()
    loop.start()
    _state.update(elector=elector, loop=loop)
    pic = build_picture(CACHE)
    logger.info("cluster picture rebuilt: %d GPU nodes, %d/%d milli-GPU reserved, %d foreign GPU pods, %d conflicts",
                len(pic.state.index), pic.state.allocated_milli(), pic.state.total_milli(), pic.foreign,
                len(pic.conflicts))
    logger.info("caches primed: %d nodes, %d pods, %d Jobs, %d GenerativeJobs; lease %s/%s as %s",
                CACHE.count("nodes"), CACHE.count("pods"), CACHE.count("jobs"), CACHE.count("generativejobs"),
                elector.namespace, elector.name, elector.identity)


@kopf.on.cleanup()
def shutdown(**_: Any) -> None:
    loop, elector = _state.get("loop"), _state.get("elector")
    if loop is not None:
        loop.stop()
        if loop.thread is not None:
            loop.thread.join(timeout=10)
    if elector is not None:
        elector.stop(release=True)


@kopf.on.probe(id="loop")
def loop_alive(**_: Any) -> str:
    """Liveness: fails (HTTP 500) when the loop thread died or made no progress for a minute."""
    loop = _state.get("loop")
    if loop is None:
        return "starting"
    if not loop.healthy(_env_float("GENSCHED_STALL_SECONDS", 60.0)):
        raise RuntimeError("the reconcile loop is not making progress")
    return "leader" if loop.elector.is_leader() else "standby"


def _admission(model: type[BaseModel], spec: Any) -> None:
    """Reject at apply time what the controller would mark Invalid (same messages, naming the field)."""
    try:
        model.model_validate(dict(spec or {}))
    except ValidationError as exc:
        raise kopf.AdmissionError(bounded("; ".join(str(e) for e in format_validation_error(exc))),
                                  code=422) from None
    except Exception as exc:  # never answer with a raw exception
        raise kopf.AdmissionError(f"spec could not be checked: {bounded(type(exc).__name__, 80)}", code=422) \
            from None


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


def _relevant_pod(body: dict) -> bool:
    """Pods the picture needs: GPU consumers, and the pods of Jobs (to know when an evicted one is gone)."""
    from gensched.controller.picture import _gpu_request

    labels = (body.get("metadata") or {}).get("labels") or {}
    return "job-name" in labels or _gpu_request(body) > 0


def _watch(kind: str):
    # async: kopf runs it on its event loop. A sync handler goes through kopf's thread pool, a hand-off per
    # watch event that cost more than the handler (a cache update under a lock held only briefly).
    async def handler(body: kopf.Body, type: str | None, **_: Any) -> None:
        obj = dict(body)
        if kind == "pods" and type != "DELETED" and not _relevant_pod(obj):
            type = "DELETED"  # not a GPU consumer (any more): keep it out of memory
        CACHE.observe(kind, type, obj)
    handler.__name__ = f"watch_{kind}"
    return handler


kopf.on.event(*GJ, id="watch-generativejobs")(_watch("generativejobs"))
kopf.on.event(GROUP, VERSION, "schedulingpolicies", id="watch-policies")(_watch("policies"))
kopf.on.event("batch", "v1", "jobs", labels=MANAGED, id="watch-jobs")(_watch("jobs"))
kopf.on.event("", "v1", "nodes", id="watch-nodes")(_watch("nodes"))
kopf.on.event("", "v1", "pods", id="watch-pods")(_watch("pods"))
kopf.on.event("scheduling.k8s.io", "v1", "priorityclasses", id="watch-priorityclasses")(_watch("priorityclasses"))
kopf.on.event("ray.io", "v1", "rayservices", labels=MANAGED, id="watch-rayservices")(_watch("rayservices"))
