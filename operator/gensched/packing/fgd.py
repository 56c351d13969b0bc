"""Fragmentation as the FGD paper defines it (Weng et al., USENIX ATC'23), vectorised over nodes.

For a task shape m (CPU, milli-GPU per GPU, GPU count, allowed GPU models), the
idle GPU capacity of node n that m could *not* use is:
- all idle GPU milli of the node, if m needs no GPU, cannot run on the node's
  GPU model, or does not fit (not enough GPUs with room, or not enough CPU);
- otherwise the idle milli on the GPUs that have less room than m needs.
A node's fragmentation is the popularity-weighted sum over the workload's
typical shapes; FGD places each task where this grows least.

Candidate evaluation is incremental: per node and shape we keep how many GPUs
have room (``cnt``) and the idle milli on GPUs without room (``short``), so a
hypothetical placement costs O(shapes), not O(shapes x GPUs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from gensched.packing.cluster import MILLI, ClusterState, GpuRequest


@dataclass(frozen=True)
class TaskMix:
    """Typical task shapes of a workload and how common each is (weights sum to 1)."""

    cpu: np.ndarray  # (M,) milli-CPU
    milli: np.ndarray  # (M,) milli-GPU per GPU, 0 for CPU-only
    num: np.ndarray  # (M,) GPUs
    models: tuple[tuple[str, ...], ...]  # allowed GPU models per shape, () = any
    weight: np.ndarray  # (M,)

    @classmethod
    def from_requests(cls, requests: list[GpuRequest], coverage: float = 0.95,
                      include_cpu_only: bool = True) -> TaskMix:
        """The most popular shapes that together cover ``coverage`` of the tasks (FGD uses 95%)."""
        counts = Counter(
            (r.cpu_milli, r.per_gpu_milli if not r.cpu_only else 0, r.gpu_count, tuple(sorted(r.gpu_models)))
            for r in requests if include_cpu_only or not r.cpu_only
        )
        if not counts:
            raise ValueError("the workload has no tasks to learn a task mix from")
        total = sum(counts.values())
        chosen: list[tuple[tuple, int]] = []
        covered = 0
        for shape, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if covered >= coverage * total:
                break
            chosen.append((shape, n))
            covered += n
        w = np.array([n for _, n in chosen], dtype=np.float64)
        return cls(
            cpu=np.array([s[0] for s, _ in chosen], dtype=np.int64),
            milli=np.array([s[1] for s, _ in chosen], dtype=np.int64),
            num=np.array([s[2] for s, _ in chosen], dtype=np.int64),
            models=tuple(s[3] for s, _ in chosen),
            weight=w / w.sum(),
        )

    def __len__(self) -> int:
        return len(self.weight)


class Fragmenter:
    """Per-node fragmentation for one TaskMix, kept in step with a ClusterState."""

    def __init__(self, state: ClusterState, mix: TaskMix) -> None:
        self.state, self.mix = state, mix
        # access[k, m]: GPU model k can run shape m
        access = np.ones((len(state.models), len(mix)), dtype=bool)
        for m, allowed in enumerate(mix.models):
            if allowed:
                access[:, m] = [k in allowed for k in state.models]
        self.always_all = (mix.milli == 0)[None, :]  # CPU-only shapes cannot use any idle GPU
        self.access = access
        self._seen = -1
        self.refresh_all()

    def refresh_all(self) -> None:
        free = self.state.gpu_free
        milli = self.mix.milli
        has_room = free[:, None, :] >= milli[None, :, None]  # (N, M, G)
        self.cnt = has_room.sum(axis=2)
        self.short = np.where(has_room, 0, free[:, None, :]).sum(axis=2)
        self.node_frag = self._frag(self.state.gpu_free.sum(axis=1), self.cnt, self.short,
                                    self.state.cpu_free, self.state.model_id)
        self._seen = self.state.version

    def sync(self) -> None:
        """Recompute the rows of nodes that changed since the last call."""
        if self._seen == self.state.version:
            return
        rows = self.state.rows_changed_since(self._seen)
        free = self.state.gpu_free[rows]
        has_room = free[:, None, :] >= self.mix.milli[None, :, None]
        self.cnt[rows] = has_room.sum(axis=2)
        self.short[rows] = np.where(has_room, 0, free[:, None, :]).sum(axis=2)
        self.node_frag[rows] = self._frag(free.sum(axis=1), self.cnt[rows], self.short[rows],
                                          self.state.cpu_free[rows], self.state.model_id[rows])
        self._seen = self.state.version

    def _frag(self, total: np.ndarray, cnt: np.ndarray, short: np.ndarray, cpu_free: np.ndarray,
              model_id: np.ndarray) -> np.ndarray:
        """Weighted fragmentation for rows described by (total idle, cnt, short, cpu, model)."""
        mix = self.mix
        cannot = (self.always_all | ~self.access[model_id] | (cnt < mix.num[None, :])
                  | (cpu_free[:, None] < mix.cpu[None, :]))
        per_shape = np.where(cannot, total[:, None], short)
        return per_shape @ mix.weight

    def after(self, nodes: np.ndarray, req: GpuRequest, gpu_values: np.ndarray | None = None) -> np.ndarray:
        """Fragmentation of ``nodes`` if ``req`` were placed there.

        For a shared request, ``gpu_values`` gives the free milli of the GPU it would take on each node.
        """
        st = self.state
        total = st.gpu_free[nodes].sum(axis=1)
        cnt = self.cnt[nodes].copy()
        short = self.short[nodes].copy()
        cpu = st.cpu_free[nodes] - req.cpu_milli
        milli = self.mix.milli[None, :]
        if req.cpu_only:
            pass
        elif req.whole_gpus:
            # k fully free GPUs go to zero: each stops having room for every GPU shape.
            cnt -= req.whole_gpus * (milli <= MILLI) * (milli > 0)
            total = total - req.whole_gpus * MILLI
        else:
            assert gpu_values is not None
            v = gpu_values[:, None]
            nv = v - req.gpu_milli
            cnt += (nv >= milli).astype(np.int64) - (v >= milli).astype(np.int64)
            short += np.where(nv < milli, nv, 0) - np.where(v < milli, v, 0)
            total = total - req.gpu_milli
        return self._frag(total, cnt, short, cpu, st.model_id[nodes])


def fragmentation_rate(state: ClusterState, mix: TaskMix) -> float:
    """Cluster-wide FGD fragmentation: share of idle GPU capacity the typical tasks could not use."""
    frag = Fragmenter(state, mix)
    idle = float(state.gpu_free.sum())
    return float(frag.node_frag.sum()) / idle if idle else 0.0
