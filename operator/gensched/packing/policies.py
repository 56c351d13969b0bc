"""Placement policies behind one Filter -> Score -> Reserve interface, vectorised over nodes.

Filter: ``ClusterState.feasible`` says which nodes could take the request.
Score: each policy ranks the feasible (node, GPU) options.
Reserve: the caller commits the winning Allocation through ``ClusterState.reserve``.

Policies (names as in the FGD paper's comparison): ``FirstFit``, ``Random``,
``DotProduct``, ``GpuClustering``, ``GpuPacking``, ``BestFit``, ``FGD``, and
``Gensched`` (ours, see ``gensched_policy.py``).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gensched.packing.cluster import MILLI, Allocation, ClusterState, GpuRequest
from gensched.packing.fgd import Fragmenter, TaskMix
from gensched.packing.mig import MigProfile


@dataclass(frozen=True)
class Unschedulable:
    key: str
    reason: str


class Placer(Protocol):
    name: str

    def place(self, state: ClusterState, req: GpuRequest) -> Allocation | Unschedulable: ...


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
    if not req.cpu_only and max(n.gpu_memory_gib for n in eligible) < req.gpu_memory_gib:
        return (f"needs {req.gpu_memory_gib:.1f} GiB per GPU but the largest eligible GPU has "
                f"{max(n.gpu_memory_gib for n in eligible):.1f} GiB: use a smaller precision "
                f"(int8/int4) or more GPUs")
    plain = [n for n in eligible if not n.mig_profile]
    if not plain and not req.cpu_only:
        biggest = max((MigProfile.parse(n.mig_profile) for n in eligible), key=lambda p: (p.milli, p.memory_gib))
        if req.whole_gpus or req.gpu_milli > biggest.milli or req.gpu_memory_gib > biggest.memory_gib:
            return (f"every eligible node is MIG-partitioned and its largest instance is {biggest.name} "
                    f"({biggest.milli} milli, {biggest.memory_gib:g} GiB): ask for a share that fits it, "
                    "or run on unpartitioned GPUs")
    if max(n.cpu_milli for n in eligible) < req.cpu_milli or max(n.memory_mib for n in eligible) < req.memory_mib:
        return "asks for more CPU or memory than any eligible node has"
    if req.cpu_only:
        want = f"{req.cpu_milli} milli-CPU free"
    elif req.whole_gpus:
        want = f"{req.whole_gpus} free GPU(s)"
    else:
        want = f"a GPU with {req.gpu_milli} milli free"
    return f"no eligible node has {want} right now; it will be placed when capacity frees up"


def _room(state: ClusterState, rows: np.ndarray, req: GpuRequest) -> np.ndarray:
    """(len(rows), 8) bool: GPUs on those nodes with room for one unit of ``req``."""
    return (state.gpu_free[rows] >= req.per_gpu_milli) & (state.gpu_mem_free[rows] >= req.gpu_memory_gib - 1e-9)


def _alloc(state: ClusterState, req: GpuRequest, row: int, gpus: list[int]) -> Allocation:
    return Allocation(
        key=req.key,
        node=state.node_at(row).name,
        gpu_indices=tuple(sorted(int(g) for g in gpus)),
        gpu_milli=0 if req.cpu_only else req.per_gpu_milli,
        gpu_memory_gib=req.gpu_memory_gib,
        cpu_milli=req.cpu_milli,
        memory_mib=req.memory_mib,
    )


def _first_gpus(state: ClusterState, row: int, req: GpuRequest) -> list[int]:
    if req.cpu_only:
        return []
    return [int(g) for g in np.flatnonzero(_room(state, np.array([row]), req)[0])[: req.gpu_count]]


def _tightest_gpu(state: ClusterState, row: int, req: GpuRequest) -> list[int]:
    """For a share: the GPU with the least room that still fits (lowest index on ties)."""
    if not req.shared:
        return _first_gpus(state, row, req)
    room = _room(state, np.array([row]), req)[0]
    free = np.where(room, state.gpu_free[row], MILLI + 1)
    return [int(np.argmin(free))]


def _mig_alloc(state: ClusterState, req: GpuRequest, rows: np.ndarray) -> Allocation:
    """A whole MIG instance, used only when no unpartitioned GPU fits: its fixed size wastes the rest.

    The smallest instance that fits (then least memory), on the node with the fewest free instances
    (fill nodes), on its GPU with the fewest left (fill GPUs); then name and index order.
    """
    free_instances = (state.gpu_free[rows] // state.slice_milli[rows, None]).sum(axis=1)
    order = np.lexsort((rows, free_instances, state.slice_mem[rows], state.slice_milli[rows]))
    row = int(rows[order[0]])
    milli, mem = state.unit(row, req)
    has_room = (state.gpu_free[row] >= milli) & (state.gpu_mem_free[row] >= mem - 1e-9)
    gpu = int(np.argmin(np.where(has_room, state.gpu_free[row], MILLI + 1)))
    return Allocation(key=req.key, node=state.node_at(row).name, gpu_indices=(gpu,), gpu_milli=milli,
                      gpu_memory_gib=mem, cpu_milli=req.cpu_milli, memory_mib=req.memory_mib)


def tie_order(names: Sequence[str], seed: int) -> np.ndarray:
    """Rank of each node in a seeded random order (0 = first): who wins among equal scores.

    The FGD reference simulator renames every node with a prefix from a seeded permutation and then
    takes the lexicographically first name among equal scores, i.e. the first node of a random order
    drawn once per run. Ranking by a seeded hash of the name gives such an order too, and it stays the
    same for the remaining nodes when nodes join or leave (the live operator rebuilds its cluster
    picture on node churn). Name order settles the (practically impossible) hash collisions.
    """
    salt = str(seed).encode()
    keys = np.array([int.from_bytes(hashlib.blake2b(n.encode(), digest_size=8, key=salt).digest(), "big")
                     for n in names], dtype=np.uint64)
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(keys, kind="stable")] = np.arange(len(names))
    return rank


class _Base:
    name = "base"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._order_of: ClusterState | None = None
        self._order = np.empty(0, dtype=np.int64)

    def tie_rank(self, state: ClusterState) -> np.ndarray:
        """Per row of ``state``: its rank in this placer's seeded node order (kept per cluster picture)."""
        if self._order_of is not state:
            self._order = tie_order([n.name for n in state.nodes], self.seed)
            self._order_of = state
        return self._order

    def place(self, state: ClusterState, req: GpuRequest) -> Allocation | Unschedulable:
        rows = np.flatnonzero(state.feasible(req))
        if rows.size == 0:
            return Unschedulable(req.key, explain_unschedulable(state, req))
        plain = rows[~state.mig[rows]] if state.any_mig else rows
        if plain.size:
            row, gpus = self.choose(state, req, plain)
            return _alloc(state, req, row, gpus)
        return _mig_alloc(state, req, rows)

    def choose(self, state: ClusterState, req: GpuRequest, rows: np.ndarray) -> tuple[int, list[int]]:
        raise NotImplementedError

    def _pick_max(self, state: ClusterState, rows: np.ndarray, score: np.ndarray) -> int:
        """Highest score; ties to the first node of the seeded order, as the reference simulator does for
        every policy (its selectHost takes the first seeded-prefixed name, not kube-scheduler's random pick)."""
        best = np.flatnonzero(score >= score.max() - 1e-12)
        if best.size == 1:
            return int(rows[best[0]])
        return int(rows[best[np.argmin(self.tie_rank(state)[rows[best]])]])


class FirstFit(_Base):
    """First node (by name) that fits; lowest GPU indices. Simple and predictable."""

    name = "FirstFit"

    def choose(self, state: ClusterState, req: GpuRequest, rows: np.ndarray) -> tuple[int, list[int]]:
        return int(rows[0]), _first_gpus(state, int(rows[0]), req)


class RandomFit(_Base):
    name = "Random"

    def choose(self, state: ClusterState, req: GpuRequest, rows: np.ndarray) -> tuple[int, list[int]]:
        row = int(self.rng.choice(rows))
        if req.shared:
            options = np.flatnonzero(_room(state, np.array([row]), req)[0])
            return row, [int(self.rng.choice(options))]
        return row, _first_gpus(state, row, req)


class DotProduct(_Base):
    """Tetris-style alignment: the node whose free (CPU, GPU) vector best matches the demand."""

    name = "DotProduct"

    def choose(self, state: ClusterState, req: GpuRequest, rows: np.ndarray) -> tuple[int, list[int]]:
        cpu_cap = state.cpu_total[rows].astype(float)
        gpu_cap = state.gpu_count[rows] * float(MILLI)
        score = (req.cpu_milli / cpu_cap) * (state.cpu_free[rows] / cpu_cap) + \
            (req.milli_total / gpu_cap) * (state.gpu_free[rows].sum(axis=1) / gpu_cap)
        row = self._pick_max(state, rows, -score)  # smallest alignment packs, as the FGD paper's DotProduct does
        return row, _tightest_gpu(state, row, req)


class BestFit(_Base):
    """Node and GPU that leave the least free capacity behind (GPU first, then CPU)."""

    name = "BestFit"

    def choose(self, state: ClusterState, req: GpuRequest, rows: np.ndarray) -> tuple[int, list[int]]:
        gpu_left = (state.gpu_free[rows].sum(axis=1) - req.milli_total) / (state.gpu_count[rows] * float(MILLI))
        cpu_left = (state.cpu_free[rows] - req.cpu_milli) / state.cpu_total[rows].astype(float)
        row = self._pick_max(state, rows, -(gpu_left + cpu_left))
        return row, _tightest_gpu(state, row, req)


MAX_SCORE_SCALE = 64.0  # keeps the free-capacity tie-break below one tier of GpuPacking's score


class GpuPacking(_Base):
    """Shares go to partly used GPUs first, then partly used nodes, then idle nodes."""

    name = "GpuPacking"

    def choose(self, state: ClusterState, req: GpuRequest, rows: np.ndarray) -> tuple[int, list[int]]:
        free = state.gpu_free[rows]
        used_node = (free < np.where(state.gpu_exists[rows], MILLI, 0)).any(axis=1)
        if req.shared:
            room = _room(state, rows, req)
            partly = (room & (free < MILLI)).any(axis=1)
            score = 2.0 * partly + used_node
        else:
            score = used_node.astype(float)
        score = score - free.sum(axis=1) / (MAX_SCORE_SCALE * MILLI)
        row = self._pick_max(state, rows, score)
        return row, _tightest_gpu(state, row, req)



class GpuClustering(_Base):
    """Keep tasks of the same GPU type together, as the FGD paper's baseline does.

    A task's type is ``share`` (a fraction of one GPU) or ``N-gpu``. Nodes score in four tiers: hosting
    only this type, hosting it among others, empty, hosting only other types; within a tier, a node
    with less GPU left scores higher (integer 0-25 on 8 GPUs' worth of milli-GPU). CPU-only tasks score
    the same everywhere.
    """

    name = "GpuClustering"
    MAX_SPEC = 8 * MILLI

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.hosted: dict[int, dict[str, int]] = defaultdict(dict)

    @staticmethod
    def kind(req: GpuRequest) -> str | None:
        if req.cpu_only:
            return None
        return "share" if req.shared else f"{req.gpu_count}-gpu"

    def choose(self, state: ClusterState, req: GpuRequest, rows: np.ndarray) -> tuple[int, list[int]]:
        tag = self.kind(req)
        if tag is None:
            row = self._pick_max(state, rows, np.zeros(len(rows)))
            return row, _tightest_gpu(state, row, req)
        left = state.gpu_free[rows].sum(axis=1)
        within = (25 * (self.MAX_SPEC - left)) // self.MAX_SPEC
        tiers = np.array([(3 if len(h) == 1 else 2) if h.get(tag) else (1 if not h else 0)
                          for h in (self.hosted[int(r)] for r in rows)])
        score = 25 * tiers + within
        row = self._pick_max(state, rows, score.astype(float))
        counts = self.hosted[row]
        counts[tag] = counts.get(tag, 0) + 1
        return row, _tightest_gpu(state, row, req)


class FGD(_Base):
    """Fragmentation Gradient Descent as published: place where node fragmentation grows least.

    Scores are quantised like the reference scheduler plugin, ``int(100 * sigmoid(drop / 1000))``.
    Ties go as in the reference simulator: to the first node of a seeded random node order drawn once
    per run (``tie_order``), and within a node a share goes to the best GPU, lowest index on ties.
    The order matters: re-drawing ties uniformly at every decision gives about 90% on the default trace,
    and name order (the trace's names run in blocks of one node type) piles tied pods, CPU-only pods
    above all, onto one kind of node.
    """

    name = "FGD"
    quantised = True

    def __init__(self, mix: TaskMix | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        self.mix = mix
        self._frag: Fragmenter | None = None

    def fragmenter(self, state: ClusterState) -> Fragmenter:
        if self.mix is None:
            raise ValueError(f"{self.name} needs the workload's task mix (TaskMix)")
        if self._frag is None or self._frag.state is not state:
            self._frag = Fragmenter(state, self.mix)
        self._frag.sync()
        return self._frag

    def choose(self, state: ClusterState, req: GpuRequest, rows: np.ndarray) -> tuple[int, list[int]]:
        frag = self.fragmenter(state)
        cand_rows, cand_gpu, values = self._candidates(state, req, rows)
        drop = frag.node_frag[cand_rows] - frag.after(cand_rows, req, values)
        score = self.score(drop, cand_rows, state, req)
        pick = self._pick_index(score, self.tie_rank(state)[cand_rows], cand_gpu)
        row = int(cand_rows[pick])
        if req.shared:
            return row, [int(cand_gpu[pick])]
        return row, _first_gpus(state, row, req)

    @staticmethod
    def _pick_index(score: np.ndarray, rank: np.ndarray, gpu: np.ndarray) -> int:
        """Best score; among equals the node first in the tie order, then its lowest GPU index."""
        best = np.flatnonzero(score >= score.max() - 1e-12)
        if best.size == 1:
            return int(best[0])
        return int(best[np.lexsort((gpu[best], rank[best]))[0]])

    def score(self, drop: np.ndarray, rows: np.ndarray, state: ClusterState, req: GpuRequest) -> np.ndarray:
        return np.floor(100.0 / (1.0 + np.exp(-drop / 1000.0)))

    @staticmethod
    def _candidates(state: ClusterState, req: GpuRequest, rows: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(node rows, GPU index, free milli of that GPU) per option; shares: one per distinct GPU state."""
        if not req.shared:
            return rows, np.full(rows.size, -1), None
        room = _room(state, rows, req)
        r_idx, g_idx = np.nonzero(room)
        values = state.gpu_free[rows[r_idx], g_idx]
        key = r_idx * (MILLI + 1) + values
        _, first = np.unique(key, return_index=True)  # same node and same free milli: same outcome
        return rows[r_idx[first]], g_idx[first], values[first]


POLICIES: dict[str, type[_Base]] = {
    "FirstFit": FirstFit,
    "Random": RandomFit,
    "DotProduct": DotProduct,
    "GpuClustering": GpuClustering,
    "GpuPacking": GpuPacking,
    "BestFit": BestFit,
    "FGD": FGD,
}
ALIASES = {"random": "Random", "dotprod": "DotProduct", "clustering": "GpuClustering", "packing": "GpuPacking",
           "bestfit": "BestFit", "firstfit": "FirstFit", "fgd": "FGD", "gensched": "Gensched"}
NEEDS_MIX = {"FGD", "Gensched"}


def get_placer(name: str, mix: TaskMix | None = None, seed: int = 0) -> Placer:
    """A policy by its name (or the simulator's short alias)."""
    from gensched.packing.gensched_policy import Gensched

    canonical = ALIASES.get(name, name)
    table: dict[str, type[_Base]] = {**POLICIES, "Gensched": Gensched}
    if canonical not in table:
        raise ValueError(f"unknown packing strategy {name!r}: use one of {', '.join(table)}")
    if canonical in NEEDS_MIX:
        return table[canonical](mix=mix, seed=seed)  # type: ignore[call-arg]
    return table[canonical](seed=seed)
