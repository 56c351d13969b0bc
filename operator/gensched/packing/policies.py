"""Placement policies behind one Filter -> Score -> Reserve interface.

Filter: ``ClusterState.candidate_gpus`` says which GPUs of a node could take the
request. Score: each policy ranks (node, GPUs) options. Reserve: the caller
commits the winning Allocation through ``ClusterState.reserve``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gensched.packing.cluster import MILLI, Allocation, ClusterState, GpuRequest


@dataclass(frozen=True)
class Unschedulable:
    key: str
    reason: str


class Placer(Protocol):
    name: str

    def place(self, state: ClusterState, req: GpuRequest) -> Allocation | Unschedulable: ...


def _alloc(req: GpuRequest, node: str, gpus: list[int]) -> Allocation:
    return Allocation(
        key=req.key,
        node=node,
        gpu_indices=tuple(sorted(gpus)),
        gpu_milli=MILLI if req.whole_gpus else req.gpu_milli,
        gpu_memory_gib=req.gpu_memory_gib,
        cpu_milli=req.cpu_milli,
        memory_mib=req.memory_mib,
    )


def explain_unschedulable(state: ClusterState, req: GpuRequest) -> str:
    """Why nothing fits, in terms an admin can act on."""
    nodes = state.nodes
    if not nodes:
        return "the cluster has no GPU nodes (no node advertises nvidia.com/gpu)"
    models = {n.gpu_model for n in nodes}
    if req.gpu_models and not models & set(req.gpu_models):
        return (f"no node has an allowed GPU model {list(req.gpu_models)}; "
                f"the cluster has {sorted(models)}")
    eligible = [n for n in nodes if not req.gpu_models or n.gpu_model in req.gpu_models]
    if req.whole_gpus and max(n.gpu_count for n in eligible) < req.whole_gpus:
        return (f"asks for {req.whole_gpus} GPUs on one node but the largest eligible node has "
                f"{max(n.gpu_count for n in eligible)}")
    if max(n.gpu_memory_gib for n in eligible) < req.gpu_memory_gib:
        return (f"needs {req.gpu_memory_gib:.1f} GiB per GPU but the largest eligible GPU has "
                f"{max(n.gpu_memory_gib for n in eligible):.1f} GiB: use a smaller precision "
                f"(int8/int4) or more GPUs")
    if max(n.cpu_milli for n in eligible) < req.cpu_milli or max(n.memory_mib for n in eligible) < req.memory_mib:
        return "asks for more CPU or memory than any eligible node has"
    want = f"{req.whole_gpus} free GPU(s)" if req.whole_gpus else f"a GPU with {req.gpu_milli} milli free"
    return f"no eligible node has {want} right now; it will be placed when capacity frees up"


class FirstFit:
    """First node (by name) that fits; lowest GPU indices. Simple and predictable."""

    name = "FirstFit"

    def place(self, state: ClusterState, req: GpuRequest) -> Allocation | Unschedulable:
        for node in state.nodes:
            gpus = state.candidate_gpus(node.name, req)
            if gpus is not None:
                return _alloc(req, node.name, gpus[: req.gpu_count])
        return Unschedulable(req.key, explain_unschedulable(state, req))


class BestFit:
    """Node and GPU that leave the least free GPU capacity behind (tightest fit)."""

    name = "BestFit"

    def place(self, state: ClusterState, req: GpuRequest) -> Allocation | Unschedulable:
        best: tuple[tuple[int, int, str], Allocation] | None = None
        for node in state.nodes:
            gpus = state.candidate_gpus(node.name, req)
            if gpus is None:
                continue
            free = state.free_milli(node.name)
            if req.whole_gpus:
                chosen = gpus[: req.whole_gpus]
                gpu_left = 0
            else:
                chosen = [min(gpus, key=lambda i: (free[i], i))]
                gpu_left = free[chosen[0]] - req.gpu_milli
            node_left = sum(free) - req.milli_total
            score = (node_left, gpu_left, node.name)
            if best is None or score < best[0]:
                best = (score, _alloc(req, node.name, chosen))
        if best is None:
            return Unschedulable(req.key, explain_unschedulable(state, req))
        return best[1]


POLICIES: dict[str, type[FirstFit] | type[BestFit]] = {"FirstFit": FirstFit, "BestFit": BestFit}


def get_placer(name: str) -> Placer:
    try:
        return POLICIES[name]()
    except KeyError as exc:
        raise ValueError(f"unknown packing strategy {name!r}: use one of {', '.join(POLICIES)}") from exc
