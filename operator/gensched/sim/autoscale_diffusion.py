"""Diffusion serving compared fairly: both sides grid-tuned on the same trace, the same control loop and
packing, then an ablation that gives per-operator the model level's loop period and start time.

Strategies (``sim/autoscale_des.py`` replays them):
- ``model_level``: whole-pipeline replicas, either one pipeline serving all three workflows or one per
  workflow (LoRA merged into its pipeline), tuned over layout x GPU share x batch;
- ``static``: the tuned model-level pipelines at a fixed count, the 95th percentile of the counts the
  control loop chose (provisioned for p95);
- ``per_operator``: text encoder, denoiser, VAE decoder (and the ControlNet inside the denoiser or as
  its own deployment) each scaled on its own, tuned stage by stage (coordinate descent) over GPU share
  x batch, control loop every ``PER_OPERATOR_LOOP_S``;
- ``per_operator_same_loop`` (ablation): the tuned per-operator configuration with the model level's
  loop period and replica start time, so what remains of the difference is granularity alone.

Tuning picks the fewest whole-GPU-seconds among configurations with at least ``TARGET_ATTAINMENT`` SLO
attainment (else the highest attainment), on the first ``tune_s`` seconds of the trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, replace

import numpy as np

from gensched.autoscale.profiles import ModelProfile
from gensched.sim.autoscale_des import (
    LOAD_GIB_S,
    START_FIXED_S,
    DeploymentSpec,
    Result,
    Strategy,
    replay,
    replica_memory_gib,
)
from gensched.sim.autoscale_workloads import ImageRequests

TARGET_ATTAINMENT = 0.99
MODEL_LOOP_S = 10.0
PER_OPERATOR_LOOP_S = 2.0
SHARES = (0.25, 0.5, 1.0)
BATCHES = (1, 2, 4, 8)
TARGETS = (1.0, 0.5)  # requests in flight per replica the loop aims at, as a fraction of the batch
Knobs = tuple[float, int, float]  # GPU share, batch, target fraction
ALL_STAGES = ("te", "unet", "cn", "vae")


def _dep(name: str, stages: tuple[str, ...], k: Knobs, workflows: tuple[int, ...] = (0, 1, 2)) -> DeploymentSpec:
    return DeploymentSpec(name, stages, k[0], k[1], workflows, k[1] * k[2])


def model_level(layout: str, k: Knobs, loop_s: float = MODEL_LOOP_S) -> Strategy:
    if layout == "shared":
        deps: tuple[DeploymentSpec, ...] = (_dep("pipeline", ALL_STAGES, k),)
    else:
        deps = (_dep("pipeline-base", ("te", "unet", "vae"), k, (0,)),
                _dep("pipeline-lora", ("te", "unet", "vae"), k, (1,)),
                _dep("pipeline-control", ALL_STAGES, k, (2,)))
    return Strategy("model_level", deps, per_operator=False, loop_s=loop_s, lora_merged=True)


def per_operator(unet: Knobs, vae: Knobs, cn: Knobs | None, te: Knobs = (0.1, 16, 1.0),
                 loop_s: float = PER_OPERATOR_LOOP_S, start_s: float | None = None) -> Strategy:
    """``cn``: None keeps the ControlNet inside the denoiser's replicas (a shared adapter), else its
    own deployment."""
    deps = [_dep("text-encoder", ("te",), te), _dep("denoiser", ("unet",) if cn else ("unet", "cn"), unet)]
    if cn:
        deps.append(_dep("controlnet", ("cn",), cn))
    deps.append(_dep("vae-decoder", ("vae",), vae))
    return Strategy("per_operator", tuple(deps), per_operator=True, loop_s=loop_s, start_s=start_s)


def _better(a: Result, b: Result | None) -> bool:
    if b is None:
        return True
    ok_a, ok_b = a.slo_attainment >= TARGET_ATTAINMENT, b.slo_attainment >= TARGET_ATTAINMENT
    if ok_a != ok_b:
        return ok_a
    if ok_a:
        return a.gpu_seconds < b.gpu_seconds
    return (a.slo_attainment, -a.gpu_seconds) > (b.slo_attainment, -b.gpu_seconds)


def _fits(profile: ModelProfile, s: Strategy) -> bool:
    """Weights and a full batch of 1024 px activations (with guidance) fit each replica's share."""
    ops = {o.name: o for o in profile.operators}
    return all(replica_memory_gib(ops, d, 1024) <= d.share * profile.gpu_memory_gib for d in s.deployments)


Say = Callable[[str], None]


def tune_model_level(profile: ModelProfile, req: ImageRequests, say: Say) -> tuple[Strategy, Result, int]:
    best: tuple[Strategy, Result] | None = None
    tried = 0
    for layout in ("shared", "per-workflow"):
        for k in ((s, b, t) for s in SHARES for b in BATCHES for t in TARGETS):
            s = model_level(layout, k)
            if not _fits(profile, s):
                continue
            r = replay(profile, req, s)
            tried += 1
            say(f"    model_level {layout} {k}: {r.gpu_seconds:.0f} GPU-s, attainment {r.slo_attainment:.4f}")
            if best is None or _better(r, best[1]):
                best = (s, r)
    assert best is not None
    return best[0], best[1], tried


def tune_per_operator(profile: ModelProfile, req: ImageRequests, say: Say, rounds: int = 2
                      ) -> tuple[Strategy, Result, int]:
    cfg: dict[str, Knobs | None] = {"unet": (0.5, 2, 1.0), "vae": (0.5, 1, 1.0), "cn": None}
    options: dict[str, list[Knobs | None]] = {
        "unet": [(s, b, t) for s in SHARES for b in BATCHES for t in TARGETS],
        "vae": [(s, b, t) for s in SHARES for b in (1, 2) for t in TARGETS],
        "cn": [None, *[(s, b, 1.0) for s in (0.25, 0.5) for b in (2, 4)]]}
    tried = 0
    seen: dict[tuple, Result] = {}

    def run(c: dict[str, Knobs | None]) -> Result | None:
        nonlocal tried
        key = tuple(sorted(c.items(), key=lambda kv: kv[0]))
        if key in seen:
            return seen[key]
        s = per_operator(c["unet"], c["vae"], c["cn"])  # type: ignore[arg-type]
        if not _fits(profile, s):
            return None
        r = replay(profile, req, s)
        tried += 1
        seen[key] = r
        say(f"    per_operator {c}: {r.gpu_seconds:.0f} GPU-s, attainment {r.slo_attainment:.4f}")
        return r

    best = run(cfg)
    assert best is not None
    for _ in range(rounds):
        changed = False
        for stage in ("unet", "vae", "cn"):
            for opt in options[stage]:
                trial = {**cfg, stage: opt}
                r = run(trial)
                if r is not None and _better(r, best) and trial != cfg:
                    cfg, best, changed = trial, r, True
        if not changed:
            break
    return per_operator(cfg["unet"], cfg["vae"], cfg["cn"]), best, tried  # type: ignore[arg-type]


def pipeline_start_s(profile: ModelProfile) -> float:
    return START_FIXED_S + sum(o.weights_gib for o in profile.operators) / LOAD_GIB_S


def static_from(s: Strategy, r: Result) -> Strategy:
    counts = np.array([x[2] for x in r.timeline]) if r.timeline else np.ones((1, len(s.deployments)))
    fixed = tuple(max(1, math.ceil(float(np.percentile(counts[:, i], 95)))) for i in range(len(s.deployments)))
    return replace(s, name="static", fixed=fixed)


def result_dict(r: Result, s: Strategy) -> dict:
    d = asdict(r)
    d.pop("timeline")
    d["config"] = {"per_operator": s.per_operator, "loop_s": s.loop_s, "start_s": s.start_s, "fixed": s.fixed,
                   "deployments": [{"name": x.name, "stages": list(x.stages), "share": x.share, "batch": x.batch,
                                    "workflows": list(x.workflows)} for x in s.deployments]}
    return d


def window(req: ImageRequests, end_s: float) -> ImageRequests:
    k = int(np.searchsorted(req.t, end_s))
    return replace(req, t=req.t[:k], steps=req.steps[:k], pixels=req.pixels[:k], guidance=req.guidance[:k],
                   workflow=req.workflow[:k])


def scaled(req: ImageRequests, factor: float) -> ImageRequests:
    return replace(req, t=req.t / factor)


def compare(profile: ModelProfile, req: ImageRequests, tune_s: float, say: Say) -> tuple[dict, dict[str, Strategy]]:
    """Tune both sides on the first ``tune_s`` seconds, then replay the whole trace."""
    tune_req = window(req, tune_s) if req.t[-1] > tune_s else req
    say(f"  tuning on {len(tune_req)} requests ({min(tune_s, float(req.t[-1])):.0f} s)")
    ml, _, n_ml = tune_model_level(profile, tune_req, say)
    po, _, n_po = tune_per_operator(profile, tune_req, say)
    out: dict[str, dict] = {}
    strategies: dict[str, Strategy] = {}
    r_ml = replay(profile, req, ml)
    strategies["static"] = static_from(ml, r_ml)
    runs = {"static": strategies["static"], "model_level": ml, "per_operator": po,
            "per_operator_same_loop": replace(po, name="per_operator_same_loop", loop_s=ml.loop_s,
                                              start_s=pipeline_start_s(profile))}
    for name, s in runs.items():
        r = r_ml if name == "model_level" else replay(profile, req, s)
        out[name] = result_dict(r, s)
        strategies[name] = s
        say(f"  {name}: {r.gpu_seconds:.0f} GPU-s ({r.gpu_seconds_fractional:.0f} fractional), "
            f"{r.energy_kwh:.3f} kWh, attainment {r.slo_attainment:.4f}, goodput {r.goodput_rps:.2f}/s "
            f"({r.wall_s:.1f} s)")
    out["model_level"]["tuning_runs"] = n_ml
    out["per_operator"]["tuning_runs"] = n_po
    return out, strategies


def fixed_gpu_goodput(profile: ModelProfile, req: ImageRequests, strategies: dict[str, Strategy], gpus: int,
                      say: Say, lo: float = 0.5, hi: float = 16.0, steps: int = 7) -> dict:
    """Highest rate (x the trace's) each strategy serves at >= TARGET_ATTAINMENT on ``gpus`` GPUs,
    found by bisection on a log scale; goodput = SLO-met requests per second at that rate."""
    out = {}
    for name in ("model_level", "per_operator"):
        s = strategies[name]
        best_rate, best = 0.0, None
        a, b = math.log(lo), math.log(hi)
        for _ in range(steps):
            mid = math.exp((a + b) / 2)
            r = replay(profile, scaled(req, mid), s, gpus=gpus)
            if r.slo_attainment >= TARGET_ATTAINMENT:
                best_rate, best, a = mid, r, (a + b) / 2
            else:
                b = (a + b) / 2
        out[name] = {"rate_scale": best_rate, "goodput_rps": best.goodput_rps if best else 0.0,
                     "slo_attainment": best.slo_attainment if best else 0.0}
        say(f"  on {gpus} GPUs, {name}: x{best_rate:.2f} of the trace, goodput "
            f"{out[name]['goodput_rps']:.2f}/s")
    return out


def measured_as_gpu(measured: ModelProfile, modelled: ModelProfile) -> ModelProfile:
    """A CPU-measured profile in GPU time: every measured point scaled by one factor, the one that makes
    the denoiser's smallest measured call equal the modelled GPU's; the ratios between operators, batches
    and resolutions stay as measured. Measured totals are taken as compute (one axis); weights and
    activation memory come from the modelled (fp16) profile."""
    from gensched.autoscale.opmodel import call_cost, time_ms
    from gensched.autoscale.profiles import OperatorProfile

    m_ops = {o.name: o for o in measured.operators}
    g_ops = {o.name: o for o in modelled.operators}
    missing = sorted(set(g_ops) - set(m_ops))
    if missing:
        raise ValueError(f"the measured profile has no operator(s) {missing}; it has {sorted(m_ops)}")
    ref = min(m_ops["denoiser"].points, key=lambda r: (r[1], r[0]))
    factor = time_ms(call_cost(g_ops["denoiser"], ref[0], ref[1]), 1.0) / ref[2]
    ops = []
    for name, g in g_ops.items():
        m = m_ops[name]
        rows = tuple((r[0], r[1], r[2] * factor) for r in m.points)
        ops.append(OperatorProfile(**{**asdict(g), "points": rows}))
    return replace(modelled, operators=tuple(ops), modelled=False,
                   source=f"{measured.source}; times x{factor:.3g} (denoiser {ref[0]:g} x {ref[1]:g} tokens "
                          f"= modelled {modelled.gpu})")
