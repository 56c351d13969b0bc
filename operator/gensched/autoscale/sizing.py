"""Replicas per operator (or per whole model) for a load and SLOs, on the performance model in
``perf.py``; the same routine sizes both strategies, so the comparison is like for like.

Load: requests/s with mean prompt and output tokens. Little's law gives the decoding sequences
``N = rate x output x TBT``; prompts arrive at ``rate x prompt`` tokens/s and are served in chunks
of ``c`` tokens per iteration, so a prompt's first token comes after about ``prompt / c`` iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

from gensched.autoscale.perf import Allocation, bandwidth_demand, fits_weights, iteration_ms, max_sequences
from gensched.autoscale.profiles import ModelProfile, OperatorProfile, ProfileError

HEADROOM = 0.8  # plan for 80% of each SLO


@dataclass(frozen=True)
class Load:
    rate: float
    prompt: float
    output: float

    @property
    def ctx(self) -> float:
        return self.prompt + self.output / 2


@dataclass(frozen=True)
class SLO:
    ttft_ms: float
    tbt_ms: float


@dataclass(frozen=True)
class Prediction:
    tbt_ms: float
    ttft_ms: float
    sequences: float
    chunk: float
    feasible: bool


def contention(ops: tuple[OperatorProfile, ...], a: Allocation, n: float, ctx: float, chunk: float,
               tau: float) -> float:
    """Bandwidth contention: the memory bandwidth the replicas draw over what their shares of GPUs have,
    at least 1 (replicas packed onto shared GPUs compete for its bandwidth)."""
    if tau <= 0:
        return 1.0
    return max(1.0, bandwidth_demand(ops, a, n, ctx, chunk, tau) / max(a.gpus, 1e-9))


def predict(ops: tuple[OperatorProfile, ...], a: Allocation, load: Load, slo: SLO, gpu_gib: float) -> Prediction:
    """The steady iteration time ``tau`` (the TBT) at ``load``: the fixed point of ``tau = T(N(tau),
    chunk(tau))`` with ``N = rate x output x tau`` (Little) and the chunk that clears arriving prompts
    within the TTFT budget; found by the secant method (``T`` is close to affine in ``tau``)."""
    if load.rate <= 0:
        return Prediction(0.0, 0.0, 0.0, 0.0, fits_weights(ops, a, gpu_gib))
    cap = 1e6

    def state(tau: float) -> tuple[float, float]:
        n = load.rate * load.output * tau / 1000
        room = HEADROOM * slo.ttft_ms - tau  # the first token needs one more iteration after the prompt
        chunk = max(load.rate * load.prompt * tau / 1000 * 1.1, load.prompt * tau / room if room > 0 else load.prompt)
        return n, chunk

    def f(tau: float) -> float:
        n, chunk = state(tau)
        stretch = contention(ops, a, n, load.ctx, chunk, tau)
        return min(iteration_ms(ops, a, n, load.ctx, chunk, stretch), cap)

    t0 = max(iteration_ms(ops, a, 1, load.ctx, 1), 1e-3)
    g0 = f(t0) - t0
    t1 = t0 + g0
    tau = t1
    for _ in range(30):
        g1 = f(t1) - t1
        if abs(g1) < 1e-4 * max(t1, 1) or t1 >= cap:
            tau = t1
            break
        t2 = t1 - g1 * (t1 - t0) / (g1 - g0) if g1 != g0 else t1 + g1
        if not t2 > 0:  # no positive fixed point: the allocation cannot keep up
            tau = cap
            break
        t0, g0, t1 = t1, g1, min(t2, cap)
        tau = t1
    n, chunk = state(tau)
    ttft = load.prompt / chunk * tau + tau
    ok = (tau <= HEADROOM * slo.tbt_ms and ttft <= HEADROOM * slo.ttft_ms * 1.01 and fits_weights(ops, a, gpu_gib)
          and n <= max_sequences(ops, a, load.ctx, gpu_gib))
    return Prediction(tau, ttft, n, chunk, ok)


def size(ops: tuple[OperatorProfile, ...], shares: tuple[float, ...], pipelined: bool, load: Load, slo: SLO,
         gpu_gib: float, min_replicas: int = 1, max_replicas: int = 256,
         start: tuple[int, ...] | None = None) -> Allocation:
    """Fewest GPUs meeting both SLOs at ``load``: start at the minimum (or half of ``start``, the current
    replicas) and add the replica that improves the worst SLO ratio most per GPU (a quarter more at once
    while far from the SLOs). Raises ProfileError if impossible."""
    names = tuple(op.name for op in ops) if pipelined else ("model",)
    first = tuple(max(min_replicas, r // 2) for r in start) if start else tuple(min_replicas for _ in shares)
    a = Allocation(names, first, shares, pipelined)
    if not fits_weights(ops, a, gpu_gib):
        raise ProfileError("a replica's GPU share cannot hold its weights: give it a larger share")

    def badness(p: Prediction) -> float:
        mem = 0.0 if p.sequences <= max_sequences(ops, a2, load.ctx, gpu_gib) else 10.0
        return max(p.tbt_ms / slo.tbt_ms, p.ttft_ms / slo.ttft_ms) + mem

    for _ in range(max_replicas * len(shares)):
        pred = predict(ops, a, load, slo, gpu_gib)
        if pred.feasible:
            return _prune(ops, a, load, slo, gpu_gib, min_replicas)
        a2 = a
        base = badness(pred)
        best, best_gain = None, -1.0
        for i, s in enumerate(shares):
            if a.replicas[i] >= max_replicas:
                continue
            step = max(1, a.replicas[i] // 4) if base > 1.5 else 1
            a2 = a.with_replicas(tuple(min(max_replicas, r + step * (j == i)) for j, r in enumerate(a.replicas)))
            gain = (base - badness(predict(ops, a2, load, slo, gpu_gib))) / (s * step)
            if gain > best_gain:
                best, best_gain = a2, gain
        if best is None:
            break
        a = best
    p = predict(ops, a, load, slo, gpu_gib)
    raise ProfileError(f"no allocation within {max_replicas} replicas meets TTFT {slo.ttft_ms:g} ms / TBT "
                       f"{slo.tbt_ms:g} ms at {load.rate:.2f} req/s (best: TBT {p.tbt_ms:.0f} ms, TTFT "
                       f"{p.ttft_ms:.0f} ms): relax the SLOs, raise maxReplicas or use larger GPUs")


def _prune(ops: tuple[OperatorProfile, ...], a: Allocation, load: Load, slo: SLO, gpu_gib: float,
           min_replicas: int) -> Allocation:
    """Drop replicas the greedy path left that are not needed (largest shares first)."""
    changed = True
    while changed:
        changed = False
        for i in sorted(range(len(a.shares)), key=lambda i: -a.shares[i]):
            if a.replicas[i] <= min_replicas:
                continue
            fewer = a.with_replicas(tuple(r - (j == i) for j, r in enumerate(a.replicas)))
            if predict(ops, fewer, load, slo, gpu_gib).feasible:
                a, changed = fewer, True
    return a


OPERATOR_SHARES = (0.1, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def choose_shares(profile: ModelProfile, load: Load, slo: SLO, pipelined: bool,
                  choices: tuple[float, ...]) -> tuple[float, ...]:
    """The GPU share of each replica (fixed for a deployment's life, like Ray Serve's ``num_gpus``):
    coordinate descent over ``choices`` for the fewest GPUs at the reference ``load``."""
    ops = profile.operators
    m = profile.gpu_memory_gib
    if not pipelined:
        need = sum(op.weights_gib for op in ops) / m
        options = [c for c in choices if c > need * 1.05]
        if not options:
            raise ProfileError(f"the whole model needs {need * m:.0f} GiB of weights: more than "
                               f"{max(choices):g} GPUs")
        best = None
        for c in options:
            try:
                a = size(ops, (c,), False, load, slo, m)
            except ProfileError:
                continue
            if best is None or a.gpus < best[1] - 1e-9:
                best = (c, a.gpus)
        if best is None:
            raise ProfileError("no whole-model replica size meets the SLOs at the reference load")
        return (best[0],)
    # Operators of one group (the experts) share one replica size; each still scales on its own load.
    units: list[list[int]] = []
    by_group: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        if op.group:
            if op.group not in by_group:
                by_group[op.group] = []
                units.append(by_group[op.group])
            by_group[op.group].append(i)
        else:
            units.append([i])

    def smallest(idx: list[int]) -> float:
        need = max(ops[i].weights_gib for i in idx) / m * 1.05
        return min(c for c in choices if c > need)

    shares = [0.0] * len(ops)
    for u in units:
        for i in u:
            shares[i] = smallest(u)
    best_gpus = _gpus_or_inf(ops, tuple(shares), load, slo, m)
    for _ in range(3):
        improved = False
        for u in units:
            floor = smallest(u)
            for c in choices:
                if c < floor or c == shares[u[0]]:
                    continue
                trial = tuple(c if j in u else x for j, x in enumerate(shares))
                g = _gpus_or_inf(ops, trial, load, slo, m)
                if g < best_gpus - 1e-9:
                    shares, best_gpus, improved = list(trial), g, True
        if not improved:
            break
    if best_gpus == float("inf"):
        raise ProfileError("no per-operator sizing meets the SLOs at the reference load")
    return tuple(shares)


def _gpus_or_inf(ops: tuple[OperatorProfile, ...], shares: tuple[float, ...], load: Load, slo: SLO,
                 m: float) -> float:
    try:
        return size(ops, shares, True, load, slo, m).gpus
    except ProfileError:
        return float("inf")
