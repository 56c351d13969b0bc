"""Replicas per operator (or per whole model) for a load and SLOs, on the performance model in
``perf.py``; the same routine sizes both strategies, so the comparison is like for like.

Load: requests/s with mean prompt and output tokens. Little's law gives the decoding sequences
``N = rate x output x TBT``; prompts arrive at ``rate x prompt`` tokens/s and are served in chunks
of ``c`` tokens per iteration, so a prompt's first token comes after about ``prompt / c`` iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

from gensched.autoscale.perf import Allocation, fits_weights, iteration_ms, max_sequences
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


def predict(ops: tuple[OperatorProfile, ...], a: Allocation, load: Load, slo: SLO, gpu_gib: float) -> Prediction:
    if load.rate <= 0:
        return Prediction(0.0, 0.0, 0.0, 0.0, fits_weights(ops, a, gpu_gib))
    tau = max(iteration_ms(ops, a, 1, load.ctx, 1), 1e-3)
    n = chunk = 0.0
    for _ in range(40):
        n = load.rate * load.output * tau / 1000
        room = HEADROOM * slo.ttft_ms - tau  # the first token needs one more iteration after the prompt
        chunk = max(load.rate * load.prompt * tau / 1000 * 1.1,
                    load.prompt * tau / room if room > 0 else load.prompt)
        new = min(iteration_ms(ops, a, n, load.ctx, chunk), 1e6)
        if abs(new - tau) < 1e-4 * max(tau, 1):
            tau = new
            break
        tau = 0.5 * (tau + new)
    ttft = load.prompt / chunk * tau + tau
    ok = (tau <= HEADROOM * slo.tbt_ms and ttft <= HEADROOM * slo.ttft_ms * 1.01 and fits_weights(ops, a, gpu_gib)
          and n <= max_sequences(ops, a, load.ctx, gpu_gib))
    return Prediction(tau, ttft, n, chunk, ok)


def size(ops: tuple[OperatorProfile, ...], shares: tuple[float, ...], pipelined: bool, load: Load, slo: SLO,
         gpu_gib: float, min_replicas: int = 1, max_replicas: int = 256) -> Allocation:
    """Fewest GPUs meeting both SLOs at ``load``: start at the minimum and add, one at a time, the
    replica that improves the worst SLO ratio most per GPU. Raises ProfileError if impossible."""
    names = tuple(op.name for op in ops) if pipelined else ("model",)
    a = Allocation(names, tuple(min_replicas for _ in shares), shares, pipelined)
    if not fits_weights(ops, a, gpu_gib):
        raise ProfileError("a replica's GPU share cannot hold its weights: give it a larger share")

    def badness(p: Prediction) -> float:
        mem = 0.0 if p.sequences <= max_sequences(ops, a2, load.ctx, gpu_gib) else 10.0
        return max(p.tbt_ms / slo.tbt_ms, p.ttft_ms / slo.ttft_ms) + mem

    for _ in range(max_replicas * len(shares)):
        pred = predict(ops, a, load, slo, gpu_gib)
        if pred.feasible:
            return a
        a2 = a
        base = badness(pred)
        best, best_gain = None, -1.0
        for i, s in enumerate(shares):
            if a.replicas[i] >= max_replicas:
                continue
            a2 = a.with_replicas(tuple(r + (j == i) for j, r in enumerate(a.replicas)))
            gain = (base - badness(predict(ops, a2, load, slo, gpu_gib))) / s
            if gain > best_gain:
                best, best_gain = a2, gain
        if best is None:
            break
        a = best
    p = predict(ops, a, load, slo, gpu_gib)
    raise ProfileError(f"no allocation within {max_replicas} replicas meets TTFT {slo.ttft_ms:g} ms / TBT "
                       f"{slo.tbt_ms:g} ms at {load.rate:.2f} req/s (best: TBT {p.tbt_ms:.0f} ms, TTFT "
                       f"{p.ttft_ms:.0f} ms): relax the SLOs, raise maxReplicas or use larger GPUs")


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
    shares = [min(c for c in choices if c > op.weights_gib / m * 1.05) for op in ops]
    best_gpus = _gpus_or_inf(ops, tuple(shares), load, slo, m)
    for _ in range(3):
        improved = False
        for i, op in enumerate(ops):
            for c in choices:
                if c <= op.weights_gib / m * 1.05 or c == shares[i]:
                    continue
                trial = tuple(c if j == i else x for j, x in enumerate(shares))
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
