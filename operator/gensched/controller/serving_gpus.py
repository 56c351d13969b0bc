"""GPUs for a Serve job's Ray workers, placed by the packing engine like any batch job.

Ray packs operator replicas (``num_gpus`` shares) into worker pods of one whole GPU each, so a
RayService needs ``ceil(sum(replicas x share))`` GPUs. Each is reserved under the key
``NS/NAME#worker-I`` with the policy's packing strategy, recorded on the RayService
(annotation ``gensched.io/worker-placements``, so a restart rebuilds them). The GPU worker group
becomes one group per chosen node, each pinned there by required node affinity with exactly as many
replicas as GPUs reserved on that node, so where the workers run is what the cluster picture holds
(one group over a set of nodes would let the scheduler put two where one was reserved). Scaling down
releases the last ones; scaling up that cannot be placed is refused with the reason (the replicas stay).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections import Counter

from gensched.api import GenerativeJobSpec
from gensched.autoscale import operator_plan
from gensched.autoscale.rayservice import INGRESS
from gensched.controller.objects import HOSTNAME, decode_allocation, encode_allocation
from gensched.controller.reservations import RESERVATIONS
from gensched.packing import Allocation, GpuRequest

ANN_WORKERS = "gensched.io/worker-placements"
LABEL_GROUP = "gensched.io/worker-group"


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


def group_name(base: str, node: str) -> str:
    """A stable worker-group name per node (KubeRay puts it in pod names: keep it short and DNS-safe)."""
    return f"{base}-{hashlib.sha1(node.encode()).hexdigest()[:8]}"


def pin(spec: dict, metadata: dict, allocations: list[Allocation]) -> None:
    """Write per-node worker groups, node affinity and the reservation record into a RayService
    manifest or patch (``workerGroupSpecs`` is replaced whole)."""
    cluster = spec.setdefault("rayClusterConfig", {})
    groups = cluster.get("workerGroupSpecs") or []
    if groups:
        template = copy.deepcopy(groups[0])
        labels = template.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
        base = labels.get(LABEL_GROUP) or template["groupName"]
        labels[LABEL_GROUP] = base  # re-pinning an existing RayService starts from the same base name
        template["template"].setdefault("spec", {}).pop("affinity", None)
        # gensched owns the worker count (it holds their GPUs): KubeRay's own autoscaler stays off.
        cluster["enableInTreeAutoscaling"] = False
        per_node = Counter(a.node for a in allocations)
        out = []
        for node in sorted(per_node):
            g = copy.deepcopy(template)
            g["groupName"] = group_name(base, node)
            g["replicas"] = g["minReplicas"] = g["maxReplicas"] = per_node[node]
            g["template"]["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": HOSTNAME, "operator": "In", "values": [node]}]}]}}}
            out.append(g)
        if not out:  # no GPU workers: keep one empty group so the shape stays valid
            g = copy.deepcopy(template)
            g["groupName"] = base
            g["replicas"] = g["minReplicas"] = g["maxReplicas"] = 0
            out.append(g)
        cluster["workerGroupSpecs"] = out
    records = [json.loads(encode_allocation(a)) for a in allocations]
    metadata.setdefault("annotations", {})[ANN_WORKERS] = json.dumps(records, sort_keys=True)
