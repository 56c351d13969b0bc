"""The Kubernetes objects gensched owns, and the placement record written on them.

A batch Job is created with ``suspend: true`` (the Kueue way of holding work).
When it is placed and due, one patch adds required node affinity for the chosen
node, the GPU assignment as annotations on the pod template, and unsuspends it.
The same annotations on the Job are the durable record of the reservation: the
operator rebuilds its cluster picture from them after a restart.
"""

from __future__ import annotations

import hashlib
import json
import time

from gensched.api.generativejob import GenerativeJobSpec
from gensched.packing import Allocation

MANAGED_BY = {"app.kubernetes.io/managed-by": "gensched"}
LABEL_JOB = "gensched.io/job"
ANN_PLACEMENT = "gensched.io/placement"
ANN_GPUS = "gensched.io/gpus"
ANN_MILLI = "gensched.io/gpu-milli"
ANN_NODE = "gensched.io/node"
HOSTNAME = "kubernetes.io/hostname"
ANN_EVICT = "gensched.io/evict"  # set with suspend: the Job gives its GPUs back once its pods are gone
WORKLOAD_METRICS_PORT = 9400  # the batch entrypoint serves gensched_workload_outputs_total here (accounting)
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def label_value(name: str) -> str:
    """A name usable as a label value (at most 63 characters): long names are cut and end in a hash."""
    if len(name) <= 63:
        return name
    return f"{name[:52].rstrip('-.')}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def job_name(gj_name: str) -> str:
    """The owned Job's name (Job names become pod label values: at most 63 characters)."""
    return label_value(gj_name)


def owner_of(obj: dict) -> str | None:
    """Name of the GenerativeJob that owns ``obj`` (ownerReferences, else the gensched.io/job label)."""
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "GenerativeJob":
            return ref.get("name")
    return (meta.get("labels") or {}).get(LABEL_JOB)


def evict_patch(by: str, reason: str) -> dict:
    return {"metadata": {"annotations": {ANN_EVICT: json.dumps({"by": by, "reason": reason, "at": time.time()})}},
            "spec": {"suspend": True}}


def requeue_patch() -> dict:
    """Drop the reservation record of a Job whose pods are gone (after an eviction)."""
    return {"metadata": {"annotations": {ANN_PLACEMENT: None, ANN_EVICT: None}}}


def owner_reference(body: dict) -> dict:
    meta = body["metadata"]
    return {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def batch_job(name: str, namespace: str, spec: GenerativeJobSpec, owner: dict) -> dict:
    """A suspended batch/v1 Job running the workload container."""
    res = spec.resources
    gpu_limit = res.whole_gpus if res.whole_gpus else 1  # a share runs on one time-sliced/MPS replica
    env = [
        {"name": "GENSCHED_MODEL", "value": spec.model.name},
        {"name": "GENSCHED_PRECISION", "value": spec.model.precision},
        {"name": "GENSCHED_GPU_MILLI", "value": str(res.gpu_milli)},
        {"name": "GENSCHED_METRICS_PORT", "value": str(WORKLOAD_METRICS_PORT)},
    ]
    if spec.model.uri:
        env.append({"name": "GENSCHED_MODEL_URI", "value": spec.model.uri})
    if spec.batch is not None:
        env.append({"name": "GENSCHED_INPUT", "value": spec.batch.input})
        if spec.batch.output:
            env.append({"name": "GENSCHED_OUTPUT", "value": spec.batch.output})
        if spec.batch.items:
            env.append({"name": "GENSCHED_ITEMS", "value": str(spec.batch.items)})
    labels = {**MANAGED_BY, LABEL_JOB: label_value(name)}
    container: dict = {
        "name": "workload",
        "image": spec.model.image,
        "env": env,
        "ports": [{"name": "metrics", "containerPort": WORKLOAD_METRICS_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": res.cpu, "memory": res.memory, "nvidia.com/gpu": str(gpu_limit)},
            "limits": {"memory": res.memory, "nvidia.com/gpu": str(gpu_limit)},
        },
    }
    if spec.model.command:
        container["command"] = list(spec.model.command)
    if spec.model.args:
        container["args"] = list(spec.model.args)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                     "ownerReferences": [owner_reference(owner)]},
        "spec": {
            "suspend": True,
            "backoffLimit": 3,
            "completions": 1,
            "parallelism": 1,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [container],
                         "tolerations": [GPU_TOLERATION, *(t.to_wire() for t in spec.tolerations)]},
            },
        },
    }


def release_patch(alloc: Allocation) -> dict:
    """The one patch that pins the Job to its node, records the GPUs, and lets it run."""
    gpus = ",".join(str(i) for i in alloc.gpu_indices)
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": HOSTNAME, "operator": "In", "values": [alloc.node]}]}]}}}
    return {
        "metadata": {"annotations": {ANN_PLACEMENT: encode_allocation(alloc)}},
        "spec": {
            "suspend": False,
            "template": {
                "metadata": {"annotations": {ANN_GPUS: gpus, ANN_MILLI: str(alloc.gpu_milli), ANN_NODE: alloc.node}},
                "spec": {"affinity": affinity},
            },
        },
    }


def encode_allocation(alloc: Allocation) -> str:
    """The durable reservation record; ``at`` (ns) orders decisions for audits and replays."""
    return json.dumps({"key": alloc.key, "node": alloc.node, "gpus": list(alloc.gpu_indices),
                       "milli": alloc.gpu_milli, "memGiB": alloc.gpu_memory_gib,
                       "cpuMilli": alloc.cpu_milli, "memMiB": alloc.memory_mib, "at": time.time_ns()},
                      sort_keys=True)


def decode_allocation(text: str) -> Allocation:
    d = json.loads(text)
    return Allocation(key=d["key"], node=d["node"], gpu_indices=tuple(d["gpus"]), gpu_milli=int(d["milli"]),
                      gpu_memory_gib=float(d["memGiB"]), cpu_milli=int(d["cpuMilli"]), memory_mib=int(d["memMiB"]))


def job_finished(job: dict) -> str | None:
    """'Complete' or 'Failed' when the Job is done, else None."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond["type"]
    return None
