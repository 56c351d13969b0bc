"""How fast an allocation serves a load (pure, modelled): the iteration time of continuous
batching with chunked prefill, for whole-model replicas or for separately deployed operators.

Model-level: one replica runs every operator on its GPU share ``s`` for its batch of ``b = N / r``
sequences and a chunk of ``c / r`` prompt tokens, so an iteration takes ``sum_i T_i(b) / s``.
Operator-level: operator ``i`` has ``r_i`` replicas of share ``s_i``; with ``m`` micro-batches in a
pipeline (``m = 1``: none, ``m = 2``: ping-pong as in disaggregated serving) a token takes
``max(sum_i T_i / s_i, m * max_i T_i / s_i)`` with ``T_i`` at the micro-batch ``N / (m r_i)``,
plus the hops between deployments. Each sequence's KV cache lives with the operator that holds
KV (memory per replica: weights + its sequences' KV <= s x GPU memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from gensched.autoscale.profiles import OperatorProfile


@dataclass(frozen=True)
class Allocation:
    names: tuple[str, ...]
    replicas: tuple[int, ...]
    shares: tuple[float, ...]  # GPU per replica
    pipelined: bool  # separate deployments (operator-level) or one process (model-level)

    @property
    def gpus(self) -> float:
        return sum(r * s for r, s in zip(self.replicas, self.shares, strict=True))

    def with_replicas(self, replicas: tuple[int, ...]) -> Allocation:
        return Allocation(self.names, replicas, self.shares, self.pipelined)


def _t(op: OperatorProfile, batch: float, ctx: float, chunk: float) -> float:
    if batch <= 0 and chunk <= 0:
        return 0.0
    return op.step_ms(max(batch, 0.0), ctx) + chunk * op.prefill_per_token_ms if batch > 0 else \
        op.step_base_ms + chunk * op.prefill_per_token_ms


def iteration_ms(ops: tuple[OperatorProfile, ...], a: Allocation, n: float, ctx: float, chunk: float) -> float:
    """Time of one decode iteration (the TBT) with ``n`` sequences and ``chunk`` prompt tokens."""
    if n <= 0 and chunk <= 0:
        return 0.0
    if not a.pipelined:
        r, s = a.replicas[0], a.shares[0]
        return sum(_t(op, n / r, ctx, chunk / r) for op in ops) / s
    best = float("inf")
    for m in (1, 2):
        stage = [_t(op, n / (m * r), ctx, chunk / (m * r)) / s
                 for op, r, s in zip(ops, a.replicas, a.shares, strict=True)]
        hops = sum(op.hop_ms for op in ops)
        best = min(best, max(sum(stage), m * max(stage)) + hops)
    return best


def max_sequences(ops: tuple[OperatorProfile, ...], a: Allocation, ctx: float, gpu_gib: float) -> float:
    """Most sequences the KV memory holds (inf when no operator keeps KV)."""
    if not a.pipelined:
        op_w = sum(op.weights_gib for op in ops)
        kv = sum(op.kv_gib_per_token for op in ops) * ctx
        free = a.shares[0] * gpu_gib - op_w
        return max(0.0, free / kv) * a.replicas[0] if kv > 0 else float("inf")
    cap = float("inf")
    for op, r, s in zip(ops, a.replicas, a.shares, strict=True):
        kv = op.kv_gib_per_token * ctx
        if kv > 0:
            cap = min(cap, max(0.0, (s * gpu_gib - op.weights_gib) / kv) * r)
    return cap


def fits_weights(ops: tuple[OperatorProfile, ...], a: Allocation, gpu_gib: float) -> bool:
    if not a.pipelined:
        return sum(op.weights_gib for op in ops) < a.shares[0] * gpu_gib
    return all(op.weights_gib < s * gpu_gib for op, s in zip(ops, a.shares, strict=True))


def busy_fraction(ops: tuple[OperatorProfile, ...], a: Allocation, n: float, ctx: float, chunk: float,
                  tbt_ms: float) -> float:
    """Share of the allocated GPU time spent on per-token work (the rest: weight reads and waiting),
    averaged over the allocation; used for the energy model."""
    if tbt_ms <= 0:
        return 0.0
    work = 0.0
    for op, r, _s in zip(ops, a.replicas, a.shares, strict=True) if a.pipelined else [
            (op, a.replicas[0], a.shares[0]) for op in ops]:
        per_item = (n / r) * (op.step_per_seq_ms + ctx / 1000 * op.step_per_kctx_ms) + chunk / r * \
            op.prefill_per_token_ms
        work += r * per_item  # ms of full-GPU work per iteration
    return min(1.0, work / (tbt_ms * a.gpus))
