"""The cluster picture rebuilt from the caches: GPU nodes, and every GPU consumer on them.

Consumers: gensched's released Jobs (their placement annotation names node and GPUs), the GPUs
reserved for Serve jobs' Ray workers (recorded on the RayService), allocations written but not yet
seen in the cache (``assumed``), and every other pod bound to a node that requests GPUs, whoever
created it. A foreign pod's GPU indices are unknown to us (the device plugin picks them): it takes the
lowest-index free GPUs of its node, and a node that is over-subscribed is simply full.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from gensched.api.quantity import parse_quantity
from gensched.controller.cache import CACHE, Cache
from gensched.controller.nodes import GPU_RESOURCE, gpu_node_from, node_taints
from gensched.controller.objects import ANN_PLACEMENT, decode_allocation, job_finished, owner_of
from gensched.controller.serving_gpus import held
from gensched.packing import Allocation, ClusterState
from gensched.packing.cluster import MILLI, OverCommitError
from gensched.sched import Taint

log = logging.getLogger(__name__)
LABEL_REPLICAS = "nvidia.com/gpu.replicas"  # GPU Feature Discovery: time-slicing replicas per GPU
MIG_PREFIX = "nvidia.com/mig-"


@dataclass
class Picture:
    state: ClusterState
    taints: dict[str, tuple[Taint, ...]] = field(default_factory=dict)
    jobs: dict[str, tuple[dict, Allocation]] = field(default_factory=dict)  # GJ key -> (Job, allocation)
    orphans: list[dict] = field(default_factory=list)  # released Jobs whose GenerativeJob is gone
    foreign: int = 0
    conflicts: list[str] = field(default_factory=list)


def _gpu_request(pod: dict) -> float:
    total = 0.0
    spec = pod.get("spec") or {}
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        res = c.get("resources") or {}
        for src in (res.get("limits") or {}, res.get("requests") or {}):
            for k, v in src.items():
                if k == GPU_RESOURCE or k.startswith(MIG_PREFIX):
                    try:
                        total = max(total, float(parse_quantity(v)))
                    except ValueError:
                        continue
    return total


def _live(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def build(cache: Cache = CACHE, assumed: dict[str, Allocation] | None = None) -> Picture:
    nodes_raw = cache.view("nodes")
    nodes, taints, replicas = [], {}, {}
    for n in nodes_raw:
        g = gpu_node_from(n)
        if g is None:
            continue
        nodes.append(g)
        taints[g.name] = node_taints(n)
        try:
            replicas[g.name] = max(1, int(((n.get("metadata") or {}).get("labels") or {}).get(LABEL_REPLICAS, 1)))
        except ValueError:
            replicas[g.name] = 1
    gjs = {f"{b['metadata']['namespace']}/{b['metadata']['name']}" for b in cache.view("generativejobs")}
    allocs: list[Allocation] = []
    pic = Picture(ClusterState([]), taints)
    counted_jobs: set[tuple[str, str]] = set()
    for job in cache.view("jobs"):
        meta = job.get("metadata") or {}
        raw = (meta.get("annotations") or {}).get(ANN_PLACEMENT)
        if not raw or job_finished(job):
            continue
        try:
            alloc = decode_allocation(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("Job %s/%s: unreadable placement ignored: %s", meta.get("namespace"), meta.get("name"), exc)
            continue
        owner = owner_of(job)
        key = f"{meta.get('namespace')}/{owner}"
        if owner and key not in gjs:
            pic.orphans.append(job)
        allocs.append(alloc)
        pic.jobs[key] = (job, alloc)
        counted_jobs.add((meta.get("namespace"), meta.get("name")))
    ray_clusters: set[tuple[str, str]] = set()
    for svc in cache.view("rayservices"):
        try:
            allocs.extend(held(svc))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("RayService %s: unreadable worker record ignored: %s", svc["metadata"].get("name"), exc)
            continue
        ray_clusters.add((svc["metadata"].get("namespace"), svc["metadata"].get("name")))
    have = {a.key for a in allocs}
    allocs.extend(a for k, a in (assumed or {}).items() if k not in have)
    state, conflicts = ClusterState.rebuild(nodes, allocs)
    pic.state, pic.conflicts = state, conflicts
    for pod in cache.view("pods"):
        if _owned(pod, counted_jobs, ray_clusters) or not _live(pod):
            continue
        node = (pod.get("spec") or {}).get("nodeName")
        units = _gpu_request(pod)
        if not node or units <= 0 or node not in state.index:
            continue
        pic.foreign += 1
        _reserve_foreign(state, pod, node, units, replicas.get(node, 1), pic.conflicts)
    for c in pic.conflicts:
        log.warning("cluster picture: %s", c)
    return pic


def _owned(pod: dict, jobs: set[tuple[str, str]], clusters: set[tuple[str, str]]) -> bool:
    meta = pod.get("metadata") or {}
    ns, labels = meta.get("namespace"), meta.get("labels") or {}
    job = labels.get("job-name") or labels.get("batch.kubernetes.io/job-name")
    if job and (ns, job) in jobs:
        return True
    cluster = labels.get("ray.io/cluster") or ""
    return any(ns == c_ns and cluster.startswith(name) for c_ns, name in clusters)


def _reserve_foreign(state: ClusterState, pod: dict, node: str, units: float, replicas: int,
                     conflicts: list[str]) -> None:
    """Take ``units`` GPUs (time-sliced replicas or MIG instances when the node has them) for a pod."""
    row = state.index[node]
    meta = pod.get("metadata") or {}
    base = f"pod:{meta.get('namespace')}/{meta.get('name')}"
    if state.mig[row]:
        milli, mem = int(state.slice_milli[row]), float(state.slice_mem[row])
    elif replicas > 1:
        milli, mem = MILLI // replicas, float(state.gpu_mem_total[row]) / replicas
    else:
        milli, mem = MILLI, float(state.gpu_mem_total[row])
    for i in range(max(1, round(units))):
        free = state.gpu_free[row, : state.gpu_count[row]]
        cands = [g for g in range(len(free)) if free[g] >= milli]
        if not cands:
            conflicts.append(f"node {node} is over-subscribed: pod {base[4:]} uses GPUs gensched cannot see free")
            for g in range(len(free)):  # whatever is left is taken: the node is full
                if free[g] > 0:
                    _take(state, f"{base}#{i}-{g}", node, g, int(free[g]), 0.0)
            return
        g = max(cands, key=lambda x: (free[x], -x)) if milli < MILLI else cands[0]
        _take(state, f"{base}#{i}", node, g, milli, min(mem, float(state.gpu_mem_free[row, g])))


def _take(state: ClusterState, key: str, node: str, gpu: int, milli: int, mem: float) -> None:
    try:
        state.reserve(Allocation(key, node, (gpu,), milli, mem, 0, 0))
    except OverCommitError as exc:
        log.warning("foreign pod not counted: %s", exc)
