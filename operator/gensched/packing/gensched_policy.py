"""``Gensched``: our placement policy, FGD with a packing preference among equally good nodes.

FGD's quantised score groups candidates whose fragmentation changes are close; among the best group,
Gensched takes the node left with the smallest idle share of its GPUs (filling nodes rather than
spreading), and only then the first in name order. Alternatives that measured no better on the
Alibaba trace (docs/benchmarks.md): exact unquantised scores, coarser or finer quantisation, task mixes
weighted by GPU demand or covering every shape, a two-step look-ahead over the top candidates.
"""

from __future__ import annotations

import numpy as np

from gensched.packing.cluster import MILLI, ClusterState, GpuRequest
from gensched.packing.policies import FGD


class Gensched(FGD):
    name = "Gensched"

    def score(self, drop: np.ndarray, rows: np.ndarray, state: ClusterState, req: GpuRequest) -> np.ndarray:
        idle_share = (state.gpu_free[rows].sum(axis=1) - req.milli_total) / (state.gpu_count[rows] * float(MILLI))
        return super().score(drop, rows, state, req) - 1e-3 * idle_share
