"""GPUs for a Serve job's Ray workers, placed by the packing engine like any batch job.

Ray packs operator replicas (``num_gpus`` shares) into worker pods of one whole GPU each, so a
RayService needs ``ceil(sum(replicas x share))`` GPUs. Each is reserved under the key
``NS/NAME#worker-I`` with the policy's packing strategy, recorded on the RayService
(annotation ``gensched.io/worker-placements``, so a restart rebuilds them), and the worker group
is pinned to the chosen nodes with required node affinity. Scaling down releases the last ones;
scaling up that cannot be placed is refused with the reason (the replicas stay as they were).
"""

from __future__ import annotations

import json
import math

from gensched.api import GenerativeJobSpec
from gensched.autoscale import operator_plan
from gensched.controller.objects import HOSTNAME, decode_allocation, encode_allocation
from gensched.controller.reservations import RESERVATIONS
from gensched.packing import Allocation, GpuRequest

ANN_WORKERS = "gensched.io/worker-placements"
INGRESS = "Ingress"


def worker_memory(spec: GenerativeJobSpec) -> float:
    """GPU memory a worker GPU must have: the largest operator's share of the model (at most the
    largest GPU here: a bigger operator spans several worker GPUs)."""
    total = spec.gpu_memory_gib() * max(1, spec.resources.whole_gpus)
    plans = operator_plan(spec)
    layers = spec.model.layers
    biggest = max((p.last_layer - p.first_layer + 1) / layers for p in plans) if layers else 1.0
    largest = max((g for _, g in RESERVATIONS.gpu_types()), default=80.0)
    return round(min(total * biggest, largest), 2)


def worker_gpus(deployments: list[dict]) -> int:
    need = sum(int(d.get("num_replicas", 1)) * float((d.get("ray_actor_options") or {}).get("num_gpus", 0))
               for d in deployments if d.get("name") != INGRESS)
    return max(0, math.ceil(need - 1e-9))


def held(svc: dict | None) -> list[Allocation]:
    raw = ((svc or {}).get("metadata", {}).get("annotations") or {}).get(ANN_WORKERS)
    return [decode_allocation(json.dumps(x)) for x in json.loads(raw)] if raw else []


def key(ns: str, name: str, i: int) -> str:
    return f"{ns}/{name}#worker-{i}"


def place(ns: str, name: str, need: int, strategy: str, current: list[Allocation],
          spec: GenerativeJobSpec) -> tuple[list[Allocation], str | None]:
    """Grow or shrink to ``need`` worker GPUs. On failure nothing new stays reserved and the
    reason is returned with the unchanged list."""
    for a in current:
        RESERVATIONS.adopt(a)
    if need <= len(current):
        for a in current[need:]:
            RESERVATIONS.release(a.key)
        return current[:need], None
    added: list[Allocation] = []
    memory, models = worker_memory(spec), tuple(spec.resources.gpu_models)
    for i in range(len(current), need):
        out = RESERVATIONS.place(GpuRequest(key(ns, name, i), whole_gpus=1, gpu_memory_gib=memory,
                                            cpu_milli=1000, memory_mib=4096, gpu_models=models), strategy)
        if not isinstance(out, Allocation):
            for a in added:
                RESERVATIONS.release(a.key)
            return current, f"{need} GPUs for Ray workers, {len(current) + len(added)} placeable: {out.reason}"
        added.append(out)
    return current + added, None


def release_all(ns: str, name: str, svc: dict | None) -> None:
    for a in held(svc):
        RESERVATIONS.release(a.key)


def pin(spec: dict, metadata: dict, allocations: list[Allocation]) -> None:
    """Write replicas, node affinity and the reservation record into a RayService manifest/patch."""
    groups = spec.setdefault("rayClusterConfig", {}).get("workerGroupSpecs") or []
    if groups:
        g = groups[0]
        n = len(allocations)
        # gensched owns the worker count (it holds their GPUs): KubeRay's own autoscaler stays off.
        g["replicas"] = g["minReplicas"] = g["maxReplicas"] = n
        spec["rayClusterConfig"]["enableInTreeAutoscaling"] = False
        nodes = sorted({a.node for a in allocations})
        tmpl = g.setdefault("template", {}).setdefault("spec", {})
        if nodes:
            tmpl["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": HOSTNAME, "operator": "In", "values": nodes}]}]}}}
    records = [json.loads(encode_allocation(a)) for a in allocations]
    metadata.setdefault("annotations", {})[ANN_WORKERS] = json.dumps(records, sort_keys=True)
