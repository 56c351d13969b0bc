"""The cluster picture: nodes, their GPUs' free shares, and who holds what.

Shares are counted in milli-GPU (thousandths of one GPU), as the Alibaba trace
and the FGD paper do, so a 0.25 GPU request is 250 milli on one GPU.
Every mutation goes through ``reserve``/``release``, which refuse to
over-commit: a GPU can never be handed out twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MILLI = 1000


class OverCommitError(RuntimeError):
    """A reservation would exceed what a node or GPU has left."""


@dataclass(frozen=True)
class GpuNode:
    name: str
    gpu_count: int
    gpu_model: str = "unknown"
    gpu_memory_gib: float = 80.0
    cpu_milli: int = 64_000
    memory_mib: int = 512 * 1024


@dataclass(frozen=True)
class GpuRequest:
    """One placement request. ``gpus`` whole GPUs, or one GPU's ``gpu_milli`` share."""

    key: str
    whole_gpus: int = 0
    gpu_milli: int = MILLI
    gpu_memory_gib: float = 0.0
    cpu_milli: int = 1000
    memory_mib: int = 4096
    gpu_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.whole_gpus < 0 or self.whole_gpus > 8:
            raise ValueError(f"whole_gpus must be 0..8, got {self.whole_gpus}")
        if self.whole_gpus == 0 and not 0 < self.gpu_milli <= MILLI:
            raise ValueError(f"gpu_milli must be 1..1000 for a shared GPU, got {self.gpu_milli}")

    @property
    def shared(self) -> bool:
        return self.whole_gpus == 0 and self.gpu_milli < MILLI

    @property
    def gpu_count(self) -> int:
        """GPUs touched by the request (a share touches one)."""
        return max(1, self.whole_gpus)

    @property
    def milli_total(self) -> int:
        return self.whole_gpus * MILLI if self.whole_gpus else self.gpu_milli


@dataclass(frozen=True)
class Allocation:
    key: str
    node: str
    gpu_indices: tuple[int, ...]
    gpu_milli: int
    gpu_memory_gib: float
    cpu_milli: int
    memory_mib: int


@dataclass
class _NodeState:
    node: GpuNode
    free_milli: list[int]
    free_mem: list[float]
    free_cpu: int
    free_memory: int
    holders: dict[str, Allocation] = field(default_factory=dict)


class ClusterState:
    """Free capacity per node and per GPU, plus the allocations that use the rest."""

    def __init__(self, nodes: list[GpuNode]) -> None:
        self._nodes: dict[str, _NodeState] = {}
        self._allocs: dict[str, Allocation] = {}
        for node in sorted(nodes, key=lambda n: n.name):
            self.add_node(node)

    def add_node(self, node: GpuNode) -> None:
        if node.name in self._nodes:
            raise ValueError(f"node {node.name} is already known")
        self._nodes[node.name] = _NodeState(
            node=node,
            free_milli=[MILLI] * node.gpu_count,
            free_mem=[node.gpu_memory_gib] * node.gpu_count,
            free_cpu=node.cpu_milli,
            free_memory=node.memory_mib,
        )

    @property
    def nodes(self) -> list[GpuNode]:
        return [s.node for s in self._nodes.values()]

    @property
    def allocations(self) -> dict[str, Allocation]:
        return dict(self._allocs)

    def free_milli(self, node: str) -> list[int]:
        return list(self._nodes[node].free_milli)

    def free_memory_gib(self, node: str) -> list[float]:
        return list(self._nodes[node].free_mem)

    def free_cpu_milli(self, node: str) -> int:
        return self._nodes[node].free_cpu

    def free_memory_mib(self, node: str) -> int:
        return self._nodes[node].free_memory

    def total_milli(self) -> int:
        return sum(len(s.free_milli) * MILLI for s in self._nodes.values())

    def allocated_milli(self) -> int:
        return sum(MILLI * len(s.free_milli) - sum(s.free_milli) for s in self._nodes.values())

    def fragmentation(self) -> float:
        """Share of all GPU capacity left free on partly used GPUs (0 = none).

        A partly used GPU can only host small shares, so its free part is the
        waste placement should avoid; fully free GPUs are not fragmented.
        (Issue 3 adds FGD's workload-aware measure next to this simple one.)
        """
        total = self.total_milli()
        stranded = sum(m for s in self._nodes.values() for m in s.free_milli if 0 < m < MILLI)
        return stranded / total if total else 0.0

    def candidate_gpus(self, node: str, req: GpuRequest) -> list[int] | None:
        """GPU indices on ``node`` that could take ``req`` (all of them, best order first)."""
        s = self._nodes[node]
        if req.gpu_models and s.node.gpu_model not in req.gpu_models:
            return None
        if s.free_cpu < req.cpu_milli or s.free_memory < req.memory_mib:
            return None
        if req.whole_gpus:
            idx = [i for i, m in enumerate(s.free_milli)
                   if m == MILLI and s.free_mem[i] >= req.gpu_memory_gib]
            return idx if len(idx) >= req.whole_gpus else None
        idx = [i for i, m in enumerate(s.free_milli)
               if m >= req.gpu_milli and s.free_mem[i] >= req.gpu_memory_gib]
        return idx or None

    def reserve(self, alloc: Allocation) -> None:
        """Take the capacity of ``alloc``; raises OverCommitError and changes nothing if it does not fit."""
        if alloc.key in self._allocs:
            raise OverCommitError(f"{alloc.key} already holds GPUs on {self._allocs[alloc.key].node}")
        s = self._nodes.get(alloc.node)
        if s is None:
            raise OverCommitError(f"{alloc.key}: unknown node {alloc.node}")
        if len(set(alloc.gpu_indices)) != len(alloc.gpu_indices):
            raise OverCommitError(f"{alloc.key}: GPU indices repeat: {alloc.gpu_indices}")
        for i in alloc.gpu_indices:
            if not 0 <= i < len(s.free_milli):
                raise OverCommitError(f"{alloc.key}: node {alloc.node} has no GPU {i}")
            if s.free_milli[i] < alloc.gpu_milli or s.free_mem[i] + 1e-9 < alloc.gpu_memory_gib:
                raise OverCommitError(
                    f"{alloc.key}: GPU {i} on {alloc.node} has {s.free_milli[i]} milli / "
                    f"{s.free_mem[i]:.1f} GiB free, needs {alloc.gpu_milli} / {alloc.gpu_memory_gib:.1f}"
                )
        if s.free_cpu < alloc.cpu_milli or s.free_memory < alloc.memory_mib:
            raise OverCommitError(f"{alloc.key}: node {alloc.node} lacks CPU or memory")
        for i in alloc.gpu_indices:
            s.free_milli[i] -= alloc.gpu_milli
            s.free_mem[i] -= alloc.gpu_memory_gib
        s.free_cpu -= alloc.cpu_milli
        s.free_memory -= alloc.memory_mib
        s.holders[alloc.key] = alloc
        self._allocs[alloc.key] = alloc

    def release(self, key: str) -> Allocation | None:
        """Give back what ``key`` holds (no-op if it holds nothing)."""
        alloc = self._allocs.pop(key, None)
        if alloc is None:
            return None
        s = self._nodes[alloc.node]
        for i in alloc.gpu_indices:
            s.free_milli[i] += alloc.gpu_milli
            s.free_mem[i] += alloc.gpu_memory_gib
        s.free_cpu += alloc.cpu_milli
        s.free_memory += alloc.memory_mib
        del s.holders[key]
        return alloc

    @classmethod
    def rebuild(cls, nodes: list[GpuNode], allocations: list[Allocation]) -> tuple[ClusterState, list[str]]:
        """Cluster picture from live allocations; returns it and the conflicts it refused."""
        state = cls(nodes)
        conflicts: list[str] = []
        for alloc in sorted(allocations, key=lambda a: a.key):
            try:
                state.reserve(alloc)
            except OverCommitError as exc:
                conflicts.append(str(exc))
        return state, conflicts
