"""Language models (dense LLMs and mixture-of-experts decoders) compared fairly on the fluid replay:

- ``model_level``: whole-model replicas, the replica size (GPU share, tensor parallel above one GPU)
  grid-tuned by replaying the trace at each size; ``static``: that size at a fixed count for the p95 load;
- ``per_operator``: typed operators (embedding, attention, FFN or experts, LM head) deployed and scaled
  apart, replica sizes from coordinate descent on the performance model for the p95 load (and all twice
  as large), headroom tuned by replaying, control loop every ``PER_OPERATOR_LOOP_S``;
  ``per_operator_same_loop``: the ablation, with the model level's loop period and whole-model start time;
- ``prefill_decode`` (dense LLMs): prompt and token pools of whole-model replicas (``autoscale_pd``), pool
  sizes from the model (the prefill pool's also x2 and x4), headroom tuned by replaying.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from gensched.autoscale.profiles import ModelProfile
from gensched.autoscale.sizing import OPERATOR_SHARES, SLO, choose_shares
from gensched.sim.autoscale_pd import choose_pool_shares, replay_pd
from gensched.sim.autoscale_sim import INTERVAL_S, StrategyResult, Trace, p95_load, replay
from gensched.sim.autoscale_workloads import Arrivals

TARGET_ATTAINMENT = 0.99
MODEL_SHARES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
HEADROOMS = (1.2, 1.5, 2.0)  # load planned over the forecast: tuned by replay for every strategy
Say = Callable[[str], None]


def trace_of(arr: Arrivals) -> Trace:
    return Trace(arr.t, arr.prompt, arr.output, arr.name)


def _better(a: StrategyResult, b: StrategyResult | None) -> bool:
    if b is None:
        return True
    ok_a, ok_b = a.slo_attainment >= TARGET_ATTAINMENT, b.slo_attainment >= TARGET_ATTAINMENT
    if ok_a != ok_b:
        return ok_a
    if ok_a:
        return a.gpu_seconds < b.gpu_seconds
    return (a.slo_attainment, -a.gpu_seconds) > (b.slo_attainment, -b.gpu_seconds)


def result_dict(r: StrategyResult) -> dict:
    d = asdict(r)
    d.pop("replicas_timeline")
    return d


def _tune(name: str, runs: list[tuple[str, Callable[[], StrategyResult]]], say: Say
          ) -> tuple[StrategyResult, str]:
    best: tuple[StrategyResult, str] | None = None
    for label, fn in runs:
        try:
            r = fn()
        except ValueError:  # ProfileError: this size cannot meet the SLOs at all
            continue
        say(f"    {name} {label}: {r.gpu_seconds:.0f} GPU-s, attainment {r.slo_attainment:.4f}")
        if best is None or _better(r, best[0]):
            best = (r, label)
    if best is None:
        raise ValueError(f"no {name} configuration serves this trace: relax the SLOs or use larger GPUs")
    return best


def tune_model_level(tr: Trace, prof: ModelProfile, slo: SLO, say: Say, shares: tuple[float, ...] = MODEL_SHARES,
                     headrooms: tuple[float, ...] = HEADROOMS) -> tuple[StrategyResult, tuple[float], float]:
    need = sum(o.weights_gib for o in prof.operators) / prof.gpu_memory_gib
    runs = [(f"share {s:g} headroom {h:g}", (lambda s=s, h=h: replay(tr, prof, slo, "model", (s,), shares=(s,),
                                                                          headroom=h)))
            for s in shares if s > need * 1.05 for h in headrooms]
    best, label = _tune("model_level", runs, say)
    return best, (best.shares[0],), float(label.rsplit(" ", 1)[1])


def compare(tr: Trace, prof: ModelProfile, slo: SLO, say: Say, prefill_decode: bool = True,
            model_shares: tuple[float, ...] = MODEL_SHARES, headrooms: tuple[float, ...] = HEADROOMS,
            extras: bool = True, per_operator_loop_s: float | None = None) -> tuple[dict, dict[str, tuple]]:
    """All strategies on ``tr``; ``extras``: also ``static`` and the ablation (the crossover map skips them);
    ``per_operator_loop_s``: the per-operator loop period (default ``PER_OPERATOR_LOOP_S``)."""
    out: dict[str, dict] = {}
    ml, ml_shares, ml_h = tune_model_level(tr, prof, slo, say, model_shares, headrooms)
    runs: dict[str, StrategyResult] = {}
    if extras:
        runs["static"] = replay(tr, prof, slo, "static", ml_shares, shares=ml_shares, headroom=ml_h)
    runs["model_level"] = ml
    # Per operator: the sizes the model picks for the p95 load, and all twice as large (a second chance at
    # the SLO the model's steady-state view may miss), each at every headroom, tuned by replaying.
    predicted = choose_shares(prof, p95_load(tr), slo, True, OPERATOR_SHARES)
    candidates = {"predicted": predicted, "doubled": tuple(min(8.0, 2 * x) for x in predicted)}
    po, po_label = _tune("per_operator", [(f"{k} headroom {h:g}", lambda sh=sh, h=h: replay(
        tr, prof, slo, "operator", ml_shares, shares=sh, headroom=h, loop_s=per_operator_loop_s))
        for k, sh in candidates.items() for h in headrooms], say)
    po_shares = candidates[po_label.split(" ", 1)[0]]
    po_h = float(po_label.rsplit(" ", 1)[1])
    runs["per_operator"] = po
    if extras:
        runs["per_operator_same_loop"] = replay(tr, prof, slo, "operator", ml_shares, loop_s=INTERVAL_S,
                                                start_s=prof.start_seconds(prof.whole()), shares=po_shares,
                                                headroom=po_h)
    tuned: dict[str, tuple] = {"model_level": (ml_shares, ml_h), "per_operator": (po_shares, po_h)}
    if prefill_decode:
        pre, dec = choose_pool_shares(prof, p95_load(tr), slo)
        pools = {f"prefill {x:g}": (x, dec) for x in sorted({pre, min(8.0, 2 * pre), min(8.0, 4 * pre)})}
        pd, pd_label = _tune("prefill_decode", [(f"{k} headroom {h:g}", lambda sh=sh, h=h: replay_pd(
            tr, prof, slo, shares=sh, headroom=h)) for k, sh in pools.items() for h in headrooms], say)
        runs["prefill_decode"] = pd
        tuned["prefill_decode"] = (pools[pd_label.rsplit(" headroom", 1)[0]], float(pd_label.rsplit(" ", 1)[1]))
    for name, r in runs.items():
        out[name] = result_dict(r)
        say(f"  {name}: {r.gpu_seconds:.0f} GPU-s ({r.gpu_seconds_fractional:.0f} fractional), {r.energy_kwh:.3f} kWh, "
            f"attainment {r.slo_attainment:.4f}, goodput {r.goodput_rps:.2f}/s, shares {r.shares} ({r.wall_s:.1f} s)")
    return out, tuned


def compressed(tr: Trace, factor: float) -> Trace:
    return Trace(tr.arrival / factor, tr.prompt, tr.output, tr.name)


def replicated(tr: Trace, copies: int, seed: int = 0) -> Trace:
    """``copies`` requests for each one, spread uniformly within +-0.5 s: the same hour at a higher rate
    (the crossover map's rate x10 / x30 keeps the trace's time shape)."""
    rng = np.random.default_rng(seed)
    jittered = [tr.arrival + rng.uniform(-0.5, 0.5, len(tr.arrival)) for _ in range(copies - 1)]
    t = np.concatenate([tr.arrival, *jittered])
    t = np.maximum(t, 0.0)
    order = np.argsort(t, kind="stable")
    return Trace(t[order], np.tile(tr.prompt, copies)[order], np.tile(tr.output, copies)[order], tr.name)


def fixed_gpu_goodput(tr: Trace, prof: ModelProfile, slo: SLO, tuned: dict[str, tuple], gpus: int, say: Say,
                      lo: float = 0.25, hi: float = 8.0, steps: int = 6) -> dict:
    """Highest rate (x the trace's, time compressed) each strategy serves at >= 99% attainment on
    ``gpus`` GPUs, by bisection on a log scale; goodput = SLO-met requests per second there."""
    out = {}
    for name in tuned:
        a, b = math.log(lo), math.log(hi)
        best_rate, best = 0.0, None
        for _ in range(steps):
            mid = math.exp((a + b) / 2)
            t = compressed(tr, mid)
            shares, headroom = tuned[name]
            try:
                if name == "prefill_decode":
                    r = replay_pd(t, prof, slo, gpus=gpus, shares=shares, headroom=headroom)
                else:
                    r = replay(t, prof, slo, "model" if name == "model_level" else "operator", shares, gpus=gpus,
                               shares=shares, headroom=headroom)
            except ValueError:
                r = None
            if r is not None and r.slo_attainment >= TARGET_ATTAINMENT and r.peak_gpus <= gpus:
                best_rate, best, a = mid, r, (a + b) / 2
            else:
                b = (a + b) / 2
        out[name] = {"rate_scale": best_rate, "goodput_rps": best.goodput_rps if best else 0.0,
                     "slo_attainment": best.slo_attainment if best else 0.0}
        say(f"  on {gpus} GPUs, {name}: x{best_rate:.2f}, goodput {out[name]['goodput_rps']:.2f}/s")
    return out
