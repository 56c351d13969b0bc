"""The cluster picture as arrays: per node CPU, memory, GPU model; per GPU the free milli-GPU and memory.

Shares are counted in milli-GPU (thousandths of one GPU), as the Alibaba trace
and the FGD paper do, so a 0.25 GPU request is 250 milli on one GPU.
Every mutation goes through ``reserve``/``release``, which refuse to
over-commit: a GPU share can never be handed out twice. The arrays let the
placement policies score every node at once (see ``policies.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gensched.packing.mig import MigProfile

MILLI = 1000
MAX_GPUS = 8


def _mig(node: GpuNode) -> MigProfile | None:
    if not node.mig_profile:
        return None
    try:
        return MigProfile.parse(node.mig_profile)
    except ValueError as exc:
        raise ValueError(f"node {node.name}: {exc}") from None


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
    mig_profile: str = ""  # MIG single strategy: every GPU cut into instances of this profile (``mig.py``)
    schedulable: bool = True  # False: cordoned; what runs there stays counted, nothing new goes there
    taints: tuple[tuple[str, str | None, str], ...] = ()  # (key, value, effect) that keep work off


@dataclass(frozen=True)
class GpuRequest:
    """One placement request: ``whole_gpus`` whole GPUs, or a ``gpu_milli`` share of one GPU, or no GPU."""

    key: str
    whole_gpus: int = 0
    gpu_milli: int = MILLI
    gpu_memory_gib: float = 0.0
    cpu_milli: int = 1000
    memory_mib: int = 4096
    gpu_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.whole_gpus < 0 or self.whole_gpus > MAX_GPUS:
            raise ValueError(f"whole_gpus must be 0..{MAX_GPUS}, got {self.whole_gpus}")
        if self.whole_gpus == 0 and not 0 <= self.gpu_milli <= MILLI:
            raise ValueError(f"gpu_milli must be 0..1000 for a shared GPU, got {self.gpu_milli}")
        if self.whole_gpus == 0 and self.gpu_milli == MILLI:  # a "share" of the whole GPU is one GPU
            object.__setattr__(self, "whole_gpus", 1)

    @property
    def cpu_only(self) -> bool:
        return self.whole_gpus == 0 and self.gpu_milli == 0

    @property
    def shared(self) -> bool:
        return self.whole_gpus == 0 and 0 < self.gpu_milli < MILLI

    @property
    def gpu_count(self) -> int:
        """GPUs touched by the request (a share touches one, a CPU-only task none)."""
        if self.cpu_only:
            return 0
        return max(1, self.whole_gpus)

    @property
    def per_gpu_milli(self) -> int:
        """Milli-GPU taken on each GPU it touches."""
        return MILLI if self.whole_gpus else self.gpu_milli

    @property
    def milli_total(self) -> int:
        return self.gpu_count * self.per_gpu_milli


@dataclass(frozen=True)
class Allocation:
    key: str
    node: str
    gpu_indices: tuple[int, ...]
    gpu_milli: int
    gpu_memory_gib: float
    cpu_milli: int
    memory_mib: int


class ClusterState:
    """Free capacity per node and per GPU (numpy arrays), plus the allocations that use the rest.

    Arrays (row = node in name order): ``gpu_free`` (N, 8) milli-GPU, 0 for GPUs a
    node does not have; ``gpu_mem_free`` (N, 8) GiB; ``cpu_free`` (N,) milli-CPU;
    ``mem_free`` (N,) MiB; ``model_id`` (N,) index into ``models``.
    """

    def __init__(self, nodes: list[GpuNode]) -> None:
        nodes = sorted(nodes, key=lambda n: n.name)
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names repeat")
        for n in nodes:
            if not 0 < n.gpu_count <= MAX_GPUS:
                raise ValueError(f"node {n.name}: gpu_count must be 1..{MAX_GPUS}, got {n.gpu_count}")
        self._nodes = nodes
        self.index = {n.name: i for i, n in enumerate(nodes)}
        self.models: list[str] = sorted({n.gpu_model for n in nodes})
        model_index = {m: i for i, m in enumerate(self.models)}
        count = np.array([n.gpu_count for n in nodes], dtype=np.int64)
        self.gpu_count = count
        exists = np.arange(MAX_GPUS)[None, :] < count[:, None] if nodes else np.zeros((0, MAX_GPUS), bool)
        self.gpu_exists = exists
        self.gpu_free = np.where(exists, MILLI, 0).astype(np.int64)
        # MIG rows: instances are handed out whole (slice_milli / slice_mem each); 0 = not partitioned
        profiles = [_mig(n) for n in nodes]
        self.slice_milli = np.array([p.milli if p else 0 for p in profiles], dtype=np.int64)
        self.slice_mem = np.array([p.memory_gib if p else 0.0 for p in profiles], dtype=np.float64)
        self.mig = self.slice_milli > 0
        self.any_mig = bool(self.mig.any())
        self.gpu_mem_total = np.array([p.memory_gib * p.per_gpu if p else n.gpu_memory_gib
                                       for n, p in zip(nodes, profiles, strict=True)], dtype=np.float64)
        self.gpu_mem_free = np.where(exists, self.gpu_mem_total[:, None] if nodes else 0.0, 0.0)
        self.cpu_total = np.array([n.cpu_milli for n in nodes], dtype=np.int64)
        self.mem_total = np.array([n.memory_mib for n in nodes], dtype=np.int64)
        self.cpu_free = self.cpu_total.copy()
        self.mem_free = self.mem_total.copy()
        self.model_id = np.array([model_index[n.gpu_model] for n in nodes], dtype=np.int64)
        self.cordoned = np.array([not n.schedulable for n in nodes], dtype=bool)
        self.blocked = self.cordoned.copy()  # nodes new work may not use now (cordoned, or masked by a caller)
        self._allocs: dict[str, Allocation] = {}
        self.version = 0  # bumped on every change; policies cache per-node work against it
        self.row_version = np.zeros(len(nodes), dtype=np.int64)  # version of each node's last change

    # -- reading
    @property
    def nodes(self) -> list[GpuNode]:
        return list(self._nodes)

    @property
    def allocations(self) -> dict[str, Allocation]:
        """A copy of every allocation (for reports; use ``allocation`` to look one up)."""
        return dict(self._allocs)

    def allocation(self, key: str) -> Allocation | None:
        return self._allocs.get(key)

    def node_at(self, row: int) -> GpuNode:
        """The node of array row ``row`` (no list copy: policies call this once per decision)."""
        return self._nodes[row]

    def free_milli(self, node: str) -> list[int]:
        i = self.index[node]
        return [int(x) for x in self.gpu_free[i, : self.gpu_count[i]]]

    def free_memory_gib(self, node: str) -> list[float]:
        i = self.index[node]
        return [float(x) for x in self.gpu_mem_free[i, : self.gpu_count[i]]]

    def free_cpu_milli(self, node: str) -> int:
        return int(self.cpu_free[self.index[node]])

    def free_memory_mib(self, node: str) -> int:
        return int(self.mem_free[self.index[node]])

    def total_milli(self) -> int:
        return int(self.gpu_count.sum()) * MILLI

    def allocated_milli(self) -> int:
        return self.total_milli() - int(self.gpu_free.sum())

    def fragmentation(self) -> float:
        """Share of all GPU capacity left free on partly used GPUs (0 = none).

        A partly used GPU can only host small shares, so its free part is the
        waste placement should avoid; fully free GPUs are not fragmented.
        (``fgd.fragmentation_rate`` is the workload-aware measure of the FGD paper.)
        """
        total = self.total_milli()
        f = self.gpu_free
        return float(f[(f > 0) & (f < MILLI)].sum()) / total if total else 0.0

    def model_mask(self, req: GpuRequest) -> np.ndarray:
        """Nodes whose GPU model the request allows."""
        if not req.gpu_models:
            return np.ones(len(self._nodes), dtype=bool)
        allowed = [i for i, m in enumerate(self.models) if m in req.gpu_models]
        return np.isin(self.model_id, allowed)

    def feasible(self, req: GpuRequest) -> np.ndarray:
        """Filter step: which nodes could take ``req`` now (bool per node)."""
        ok = (self.cpu_free >= req.cpu_milli) & (self.mem_free >= req.memory_mib) & ~self.blocked
        if req.cpu_only:
            return ok
        ok &= self.model_mask(req)
        if not self.any_mig:  # the common case, kept scalar: this runs once per decision over every node
            fits_gpu = (self.gpu_free >= req.per_gpu_milli) & (self.gpu_mem_free >= req.gpu_memory_gib - 1e-9)
            return ok & (fits_gpu.sum(axis=1) >= req.gpu_count)
        # a MIG instance takes only a share that fits it, and is taken whole
        fits_instance = (req.gpu_milli <= self.slice_milli) & (req.gpu_memory_gib <= self.slice_mem + 1e-9)
        ok &= ~self.mig | (req.shared & fits_instance)
        need_milli = np.where(self.mig, self.slice_milli, req.per_gpu_milli)
        need_mem = np.where(self.mig, self.slice_mem, req.gpu_memory_gib)
        fits_gpu = (self.gpu_free >= need_milli[:, None]) & (self.gpu_mem_free >= need_mem[:, None] - 1e-9)
        return ok & (fits_gpu.sum(axis=1) >= req.gpu_count)

    def candidate_gpus(self, node: str, req: GpuRequest) -> list[int] | None:
        """GPU indices on ``node`` that could take ``req`` (None if the node cannot)."""
        i = self.index[node]
        if not self.feasible(req)[i]:
            return None
        if req.cpu_only:
            return []
        milli, mem = self.unit(i, req)
        fits = (self.gpu_free[i] >= milli) & (self.gpu_mem_free[i] >= mem - 1e-9)
        return [int(g) for g in np.flatnonzero(fits)]

    def unit(self, row: int, req: GpuRequest) -> tuple[int, float]:
        """(milli, GiB) that ``req`` takes on each GPU of node ``row``: a whole instance on MIG nodes."""
        if self.mig[row]:
            return int(self.slice_milli[row]), float(self.slice_mem[row])
        return req.per_gpu_milli, req.gpu_memory_gib

    def mask(self, rows: np.ndarray | None) -> None:
        """Block ``rows`` (bool per node, or None for none) for new placements, on top of cordoned nodes.

        The scheduling cycle masks nodes a job may not use (taints, a node held for the head job)."""
        self.blocked = self.cordoned if rows is None else (self.cordoned | rows)

    def fits_node(self, row: int, req: GpuRequest, free: np.ndarray | None = None,
                  mem_free: np.ndarray | None = None, cpu_free: int | None = None,
                  memory_free: int | None = None) -> bool:
        """Would ``req`` fit node ``row`` given these free amounts (default: what is free now)?

        Used to ask "when would it fit" with capacity that running work will give back."""
        free = self.gpu_free[row] if free is None else free
        mem_free = self.gpu_mem_free[row] if mem_free is None else mem_free
        cpu = int(self.cpu_free[row]) if cpu_free is None else cpu_free
        mem = int(self.mem_free[row]) if memory_free is None else memory_free
        if cpu < req.cpu_milli or mem < req.memory_mib:
            return False
        if req.cpu_only:
            return True
        if req.gpu_models and self.models[int(self.model_id[row])] not in req.gpu_models:
            return False
        if self.mig[row]:
            if not req.shared or req.gpu_milli > self.slice_milli[row] or req.gpu_memory_gib > self.slice_mem[row]:
                return False
            need_milli, need_mem = int(self.slice_milli[row]), float(self.slice_mem[row])
        else:
            need_milli, need_mem = req.per_gpu_milli, req.gpu_memory_gib
        room = (free >= need_milli) & (mem_free >= need_mem - 1e-9)
        return int(room.sum()) >= req.gpu_count

    # -- changing
    def reserve(self, alloc: Allocation) -> None:
        """Take the capacity of ``alloc``; raises OverCommitError and changes nothing if it does not fit."""
        if alloc.key in self._allocs:
            raise OverCommitError(f"{alloc.key} already holds GPUs on {self._allocs[alloc.key].node}")
        i = self.index.get(alloc.node)
        if i is None:
            raise OverCommitError(f"{alloc.key}: unknown node {alloc.node}")
        gpus = list(alloc.gpu_indices)
        if len(set(gpus)) != len(gpus):
            raise OverCommitError(f"{alloc.key}: GPU indices repeat: {alloc.gpu_indices}")
        if self.mig[i] and gpus and (len(gpus) != 1 or alloc.gpu_milli != self.slice_milli[i]
                                     or abs(alloc.gpu_memory_gib - self.slice_mem[i]) > 1e-9):
            raise OverCommitError(f"{alloc.key}: node {alloc.node} hands out whole MIG instances of "
                                  f"{self.slice_milli[i]} milli / {self.slice_mem[i]:g} GiB, one per allocation")
        for g in gpus:
            if not 0 <= g < self.gpu_count[i]:
                raise OverCommitError(f"{alloc.key}: node {alloc.node} has no GPU {g}")
            if self.gpu_free[i, g] < alloc.gpu_milli or self.gpu_mem_free[i, g] + 1e-9 < alloc.gpu_memory_gib:
                raise OverCommitError(
                    f"{alloc.key}: GPU {g} on {alloc.node} has {self.gpu_free[i, g]} milli / "
                    f"{self.gpu_mem_free[i, g]:.1f} GiB free, needs {alloc.gpu_milli} / {alloc.gpu_memory_gib:.1f}"
                )
        if self.cpu_free[i] < alloc.cpu_milli or self.mem_free[i] < alloc.memory_mib:
            raise OverCommitError(f"{alloc.key}: node {alloc.node} lacks CPU or memory")
        self.gpu_free[i, gpus] -= alloc.gpu_milli
        self.gpu_mem_free[i, gpus] -= alloc.gpu_memory_gib
        self.cpu_free[i] -= alloc.cpu_milli
        self.mem_free[i] -= alloc.memory_mib
        self._allocs[alloc.key] = alloc
        self._touch(i)

    def release(self, key: str) -> Allocation | None:
        """Give back what ``key`` holds (no-op if it holds nothing)."""
        alloc = self._allocs.pop(key, None)
        if alloc is None:
            return None
        i = self.index[alloc.node]
        gpus = list(alloc.gpu_indices)
        self.gpu_free[i, gpus] += alloc.gpu_milli
        self.gpu_mem_free[i, gpus] += alloc.gpu_memory_gib
        self.cpu_free[i] += alloc.cpu_milli
        self.mem_free[i] += alloc.memory_mib
        self._touch(i)
        return alloc

    def _touch(self, row: int) -> None:
        self.version += 1
        self.row_version[row] = self.version

    def rows_changed_since(self, version: int) -> np.ndarray:
        """Nodes changed after ``version`` (each reader keeps its own cursor)."""
        return np.flatnonzero(self.row_version > version)

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
