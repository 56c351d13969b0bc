"""How long one call of a model operator takes on a share of a GPU, on two axes (pure, modelled).

A call's whole-GPU cost is split into ``compute_ms`` (compute-bound kernels), ``memory_ms``
(memory-bound kernels) and ``host_ms`` (the host issuing the kernels). On a share ``s`` of a GPU
(MPS: a share of the SMs) compute-bound work runs ``1/s`` slower, but memory-bound work is limited by
the bandwidth the share reaches, ``min(1, BW_REACH x s)`` (a few SMs already saturate HBM), divided by
the contention of the other replicas on that GPU (``stretch`` >= 1: their bandwidth demand above the
GPU's). So a compute-heavy and a bandwidth-heavy operator can share a GPU with little slow-down,
two compute-heavy ones cannot. A replica spanning ``s > 1`` GPUs (tensor parallel) divides both by
``s`` and pays the operator's all-reduce time (``tp_*``). Points are interpolated linearly in the batch
(extrapolated with the last slope) and between context classes. Energy: ``dynamic_joules`` (work-based).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from gensched.autoscale.profiles import OperatorProfile

BW_REACH = 2.5  # a share s of the SMs reaches min(1, 2.5 s) of the memory bandwidth (modelled)


@dataclass(frozen=True)
class Cost:
    compute_ms: float
    memory_ms: float
    host_ms: float

    @property
    def gpu_ms(self) -> float:
        return self.compute_ms + self.memory_ms


def bandwidth_share(share: float) -> float:
    return 1.0 if share >= 1 else min(1.0, BW_REACH * share)


def _row_cost(row: tuple[float, ...]) -> Cost:
    if len(row) >= 6:
        return Cost(row[3], row[4], row[5])
    return Cost(row[2], 0.0, 0.0)  # measured total only: taken as compute


def _lerp(a: Cost, b: Cost, w: float) -> Cost:
    return Cost(a.compute_ms + w * (b.compute_ms - a.compute_ms), a.memory_ms + w * (b.memory_ms - a.memory_ms),
                a.host_ms + w * (b.host_ms - a.host_ms))


def _in_batch(rows: list[tuple[float, ...]], batch: float) -> Cost:
    xs = [r[0] for r in rows]
    if len(rows) == 1:
        c = _row_cost(rows[0])
        k = batch / xs[0]  # one point: work grows with the batch, the host's share does not
        return Cost(c.compute_ms * k, c.memory_ms * k, c.host_ms)
    i = min(max(bisect.bisect_left(xs, batch), 1), len(rows) - 1)
    a, b = rows[i - 1], rows[i]
    w = (batch - a[0]) / (b[0] - a[0])
    out = _lerp(_row_cost(a), _row_cost(b), w)
    return Cost(max(out.compute_ms, 0.0), max(out.memory_ms, 0.0), max(out.host_ms, 0.0))


_CACHE: dict[tuple[int, float, float], tuple[OperatorProfile, Cost]] = {}


def call_cost(op: OperatorProfile, batch: float, ctx: float) -> Cost:
    """Whole-GPU cost of one call with ``batch`` items at ``ctx`` context (or latent) tokens."""
    key = (id(op), batch, ctx)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is op:
        return hit[1]
    cost = _call_cost(op, batch, ctx)
    if len(_CACHE) > 200_000:
        _CACHE.clear()
    _CACHE[key] = (op, cost)
    return cost


def _call_cost(op: OperatorProfile, batch: float, ctx: float) -> Cost:
    if batch <= 0:
        return Cost(0.0, 0.0, 0.0)
    if not op.points:
        # The linear profile: weight and KV reads are memory-bound, per-item work compute-bound.
        return Cost(batch * op.step_per_seq_ms, op.step_base_ms + batch * ctx / 1000 * op.step_per_kctx_ms, 0.0)
    classes = sorted({r[1] for r in op.points})
    by_ctx = {c: sorted((r for r in op.points if r[1] == c), key=lambda r: r[0]) for c in classes}
    if ctx in by_ctx or len(classes) == 1:
        return _in_batch(by_ctx.get(ctx, by_ctx[classes[0]]), batch)
    j = min(max(bisect.bisect_left(classes, ctx), 1), len(classes) - 1)
    lo, hi = classes[j - 1], classes[j]
    return _lerp(_in_batch(by_ctx[lo], batch), _in_batch(by_ctx[hi], batch), (ctx - lo) / (hi - lo))


def time_ms(cost: Cost, share: float, stretch: float = 1.0) -> float:
    """Duration of a call of ``cost`` on a GPU share (``stretch``: bandwidth contention on that GPU)."""
    if share >= 1:
        return max((cost.compute_ms + cost.memory_ms * stretch) / share, cost.host_ms)
    return max(cost.compute_ms / share + cost.memory_ms * stretch / bandwidth_share(share), cost.host_ms)


def call_ms(op: OperatorProfile, batch: float, ctx: float, share: float, stretch: float = 1.0) -> float:
    t = time_ms(call_cost(op, batch, ctx), share, stretch)
    if share > 1 and batch > 0:
        t += op.tp_base_ms + batch * op.tp_per_seq_ms
    return t


def bandwidth_demand(cost: Cost, share: float) -> float:
    """Share of the GPU's bandwidth a replica draws while it runs calls of ``cost`` back to back."""
    t = time_ms(cost, share)
    return min(1.0, cost.memory_ms / t) if t > 0 else 0.0


def compute_fraction(cost: Cost) -> float:
    return cost.compute_ms / cost.gpu_ms if cost.gpu_ms > 0 else 0.0


def dynamic_joules(tdp: float, idle: float, cost: Cost) -> float:
    """Energy above idle of the work of one call, whatever share or time it ran in: compute-bound
    kernels at the full dynamic range, memory-bound ones at half (modelled, the same for every strategy).
    The idle power of the GPUs a strategy holds is counted apart (per GPU in use per second)."""
    return (tdp - idle) * (cost.compute_ms + 0.5 * cost.memory_ms) / 1000
