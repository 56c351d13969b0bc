"""How fast an allocation serves a load (pure, modelled): the iteration time of continuous
batching with chunked prefill, for whole-model replicas or for separately deployed operators.

Model-level: one replica runs every operator on its GPU share ``s`` for its batch of ``b = N / r``
sequences and a chunk of ``c / r`` prompt tokens, so an iteration takes ``sum_i T_i(b, s)``.
Operator-level: operator ``i`` has ``r_i`` replicas of share ``s_i``; with ``m`` micro-batches in a
pipeline (``m = 1``: none, ``m = 2``: ping-pong as in disaggregated serving) a token takes
``max(chain, m * max_i T_i)`` with ``T_i`` at the micro-batch ``N / (m r_i)``, where the chain adds
the operators one after another except those of one ``group`` (the experts of a layer), which run
side by side (the slowest counts), plus the hops between deployments.

Two axes (``opmodel.py``): weight and KV reads are memory-bound and slow down with the bandwidth a
share reaches (``stretch``: contention with the other replicas on the GPU), per-token arithmetic is
compute-bound and slows down with the share. A replica on ``s > 1`` GPUs (tensor parallel) divides
both by ``s`` and pays its all-reduces. Each sequence's KV cache lives with the operator that holds
KV (memory per replica: weights + its sequences' KV <= s x GPU memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from gensched.autoscale.opmodel import bandwidth_share
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


def split_ms(op: OperatorProfile, batch: float, ctx: float, chunk: float) -> tuple[float, float]:
    """(compute, memory) whole-GPU milliseconds of one iteration of ``op``."""
    if batch <= 0 and chunk <= 0:
        return 0.0, 0.0
    b = max(batch, 0.0)
    compute = b * op.step_per_seq_ms + chunk * op.prefill_per_token_ms
    memory = op.step_base_ms + b * ctx / 1000 * op.step_per_kctx_ms
    return compute, memory


def op_ms(op: OperatorProfile, batch: float, ctx: float, chunk: float, share: float, stretch: float = 1.0) -> float:
    compute, memory = split_ms(op, batch, ctx, chunk)
    if compute == 0 and memory == 0:
        return 0.0
    if share > 1:
        return (compute + memory * stretch) / share + op.tp_base_ms + (max(batch, 0.0) + chunk) * op.tp_per_seq_ms
    return compute / share + memory * stretch / bandwidth_share(share)


def iteration_ms(ops: tuple[OperatorProfile, ...], a: Allocation, n: float, ctx: float, chunk: float,
                 stretch: float = 1.0) -> float:
    """Time of one decode iteration (the TBT) with ``n`` sequences and ``chunk`` prompt tokens."""
    if n <= 0 and chunk <= 0:
        return 0.0
    if not a.pipelined:
        r, s = a.replicas[0], a.shares[0]
        return sum(op_ms(op, n / r, ctx, chunk / r, s, stretch) for op in ops)
    best = float("inf")
    for m in (1, 2):
        stage = [op_ms(op, n / (m * r), ctx, chunk / (m * r), s, stretch)
                 for op, r, s in zip(ops, a.replicas, a.shares, strict=True)]
        groups: dict[str, float] = {}
        chain = 0.0
        for op, t in zip(ops, stage, strict=True):
            if op.group:
                groups[op.group] = max(groups.get(op.group, 0.0), t)
            else:
                chain += t
        chain += sum(groups.values())
        hops = sum(op.hop_ms for op in ops)
        best = min(best, max(chain, m * max(stage)) + hops)
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
    """Share of the allocated GPU time spent on compute-bound work (the rest: weight and KV reads,
    waiting), averaged over the allocation; used for the energy model."""
    if tbt_ms <= 0:
        return 0.0
    work = 0.0
    for op, r, _s in zip(ops, a.replicas, a.shares, strict=True) if a.pipelined else [
            (op, a.replicas[0], a.shares[0]) for op in ops]:
        compute, _ = split_ms(op, n / r, ctx, chunk / r)
        work += r * compute  # ms of full-GPU compute per iteration
    return min(1.0, work / (tbt_ms * a.gpus))


def bandwidth_demand(ops: tuple[OperatorProfile, ...], a: Allocation, n: float, ctx: float, chunk: float,
                     tbt_ms: float) -> float:
    """GPUs' worth of memory bandwidth the allocation draws per iteration (for contention)."""
    if tbt_ms <= 0:
        return 0.0
    bw = 0.0
    for op, r, _s in zip(ops, a.replicas, a.shares, strict=True) if a.pipelined else [
            (op, a.replicas[0], a.shares[0]) for op in ops]:
        _, memory = split_ms(op, n / r, ctx, chunk / r)
        bw += r * memory  # ms of full-GPU bandwidth per iteration
    return bw / tbt_ms
