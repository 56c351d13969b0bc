"""``gensched simulate autoscale``: static vs model-level vs per-operator (and, for dense LLMs,
prefill/decode) serving on a trace of arrivals, for a diffusion pipeline, a mixture-of-experts
decoder or a dense LLM.

    gensched simulate autoscale --workload diffusion|moe|llm --trace ARRIVALS.csv --json OUT.json

OUT.json: ``strategies.<name>`` (``static``, ``model_level``, ``per_operator``, the ablation
``per_operator_same_loop`` and for LLMs ``prefill_decode``), each with ``gpu_seconds`` (whole GPUs
after packing), ``gpu_seconds_fractional``, ``energy_kwh``, ``slo_attainment`` and ``goodput_rps``;
``comparison`` (savings of per-operator against the model level, and the ablation's split);
``fixed_gpus`` with ``--fixed-gpus N``. Every latency and power number is modelled (``modelled``);
the trace's arrivals and token counts and the wall time are measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gensched.autoscale.profiles import ModelProfile
from gensched.autoscale.roofline import GPUS, MOE_SHAPES, SHAPES, diffusion_profile, moe_profile, profile
from gensched.autoscale.sizing import SLO
from gensched.sim.autoscale_workloads import (
    EXPERT_POPULARITY,
    Arrivals,
    TraceError,
    diffusion_requests,
    load_arrivals,
)

WORKLOADS = ("diffusion", "moe", "llm")
DEFAULT_MODEL = {"diffusion": "sd15", "moe": "mixtral-8x7b", "llm": "llama-7b"}
KEYS = ("gpu_seconds", "gpu_seconds_fractional", "energy_kwh", "slo_attainment", "goodput_rps")


def _say(quiet: bool) -> Callable[..., None]:
    return (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))


def _check(args: argparse.Namespace) -> None:
    if args.workload not in WORKLOADS:
        raise TraceError(f"--workload {args.workload!r}: use one of {', '.join(WORKLOADS)}")
    models = {"diffusion": ["sd15"], "moe": sorted(MOE_SHAPES), "llm": sorted(SHAPES)}[args.workload]
    if args.model not in models:
        raise TraceError(f"--model {args.model!r} is not a {args.workload} model here: use one of {', '.join(models)}")
    if args.gpu not in GPUS:
        raise TraceError(f"--gpu {args.gpu!r}: use one of {', '.join(sorted(GPUS))}")
    if args.profile and args.workload != "diffusion":
        raise TraceError("--profile (a measured operator profile) is used with --workload diffusion only")
    if args.fixed_gpus is not None and not 1 <= args.fixed_gpus <= 4096:
        raise TraceError(f"--fixed-gpus must be 1..4096, got {args.fixed_gpus}")


def comparison(strategies: dict[str, dict]) -> dict:
    ml, po = strategies["model_level"], strategies["per_operator"]
    ab = strategies.get("per_operator_same_loop")

    def saving(key: str, a: dict | None) -> float | None:
        return None if a is None or ml[key] <= 0 else round(1 - a[key] / ml[key], 4)

    out = {"per_operator_gpu_seconds_saving": saving("gpu_seconds", po),
           "per_operator_energy_saving": saving("energy_kwh", po),
           "ablation_gpu_seconds_saving": saving("gpu_seconds", ab),
           "both_meet_99pct": ml["slo_attainment"] >= 0.99 and po["slo_attainment"] >= 0.99}
    if ab is not None and out["per_operator_gpu_seconds_saving"] is not None:
        out["gain_from_granularity"] = out["ablation_gpu_seconds_saving"]
        out["gain_from_faster_scaling"] = round(out["per_operator_gpu_seconds_saving"]  # type: ignore[operator]
                                                - out["ablation_gpu_seconds_saving"], 4)
    if "prefill_decode" in strategies:
        out["prefill_decode_gpu_seconds_saving"] = saving("gpu_seconds", strategies["prefill_decode"])
    return out


def run(args: argparse.Namespace, quiet: bool = False) -> dict:
    """Run the comparison the arguments describe (the CLI's entry) and write ``args.json``."""
    args.workload = getattr(args, "workload", None) or "llm"
    args.model = getattr(args, "model", None) or DEFAULT_MODEL.get(args.workload, "")
    for name, default in (("profile", None), ("fixed_gpus", None), ("tune_seconds", 450.0), ("seed", 0),
                          ("slo_ttft_ms", 1000.0), ("slo_tbt_ms", 100.0), ("rate_scale", 1.0), ("gpu", "h100"),
                          ("json", None)):
        if getattr(args, name, None) is None:
            setattr(args, name, default)
    _check(args)
    say = _say(quiet)
    arr = load_arrivals(args.trace, args.rate_scale, args.seed)
    out: dict = {"workload": args.workload, "trace": str(args.trace), "requests": len(arr),
                 "duration_s": round(float(arr.t[-1]), 1), "rate_scale": args.rate_scale, "model": args.model,
                 "gpu": args.gpu, "measured": "the trace's arrivals" + (" and token counts" if arr.has_tokens else "")
                 + "; wall time", "strategies": {}}
    say(f"{arr.name}: {len(arr)} requests over {arr.t[-1] / 60:.1f} min (rate x{args.rate_scale:g}), "
        f"{args.workload} {args.model} on {args.gpu}")
    if args.workload == "diffusion":
        _diffusion(args, arr, out, say)
    else:
        _language(args, arr, out, say)
    out["comparison"] = comparison(out["strategies"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
    return out


def _diffusion(args: argparse.Namespace, arr: Arrivals, out: dict, say: Callable[..., None]) -> None:
    from gensched.sim import autoscale_diffusion as ad
    from gensched.sim.autoscale_des import SLO_FLOOR_S, SLO_SCALE

    prof = diffusion_profile(args.gpu)
    if args.profile:
        measured = ModelProfile.load(args.profile, expect=[o.name for o in prof.operators])
        prof = ad.measured_as_gpu(measured, prof)
    req = diffusion_requests(arr, args.seed)
    out["modelled"] = prof.source
    out["profile_modelled"] = prof.modelled
    out["slo"] = {"per_request": f"max({SLO_FLOOR_S:g} s, {SLO_SCALE:g} x the image's latency alone on one GPU)"}
    out["mix"] = {"steps": np.bincount(np.searchsorted([1, 4, 20, 50], req.steps)).tolist(),
                  "pixels_1024": int((req.pixels == 1024).sum()), "guidance": int(req.guidance.sum()),
                  "workflows": np.bincount(req.workflow, minlength=3).tolist()}
    strategies, tuned = ad.compare(prof, req, args.tune_seconds, say)
    out["strategies"] = strategies
    if args.fixed_gpus:
        tune_req = ad.window(req, args.tune_seconds)
        out["fixed_gpus"] = {"gpus": args.fixed_gpus, "trace_seconds": min(args.tune_seconds, float(req.t[-1])),
                             "strategies": ad.fixed_gpu_goodput(prof, tune_req, tuned, args.fixed_gpus, say)}


def _language(args: argparse.Namespace, arr: Arrivals, out: dict, say: Callable[..., None]) -> None:
    from gensched.sim import autoscale_llm as al

    prof = moe_profile(args.model, args.gpu, EXPERT_POPULARITY) if args.workload == "moe" else \
        profile(args.model, args.gpu)
    slo = SLO(args.slo_ttft_ms, args.slo_tbt_ms)
    out["modelled"] = prof.source
    out["slo"] = {"ttft_ms": slo.ttft_ms, "tbt_ms": slo.tbt_ms}
    if args.workload == "moe":
        out["expert_popularity"] = list(EXPERT_POPULARITY)
    tr = al.trace_of(arr)
    strategies, tuned = al.compare(tr, prof, slo, say, prefill_decode=args.workload == "llm")
    out["strategies"] = strategies
    if args.fixed_gpus:
        out["fixed_gpus"] = {"gpus": args.fixed_gpus,
                             "strategies": al.fixed_gpu_goodput(tr, prof, slo, tuned, args.fixed_gpus, say)}


def run_autoscale(trace: Path, model: str, gpu: str, ttft_ms: float, tbt_ms: float, rate_scale: float,
                  baseline: str = "whole", json_out: Path | None = None, quiet: bool = False,
                  workload: str = "llm") -> dict:
    """The LLM comparison with positional arguments (older callers); ``baseline`` is ignored: the
    model level is grid-tuned over whole and fractional GPU shares."""
    ns = argparse.Namespace(trace=trace, model=model, gpu=gpu, slo_ttft_ms=ttft_ms, slo_tbt_ms=tbt_ms,
                            rate_scale=rate_scale, json=json_out, workload=workload)
    return run(ns, quiet)


def print_table(out: dict) -> None:
    print(f"{Path(out['trace']).name} x{out['rate_scale']:g}: {out['workload']} {out['model']} on {out['gpu']}, "
          f"{out['requests']} requests")
    print(f"{'strategy':<24}{'GPU-s':>9}{'frac GPU-s':>11}{'kWh':>9}{'SLO att.':>10}{'goodput/s':>11}")
    for name, r in out["strategies"].items():
        print(f"{name:<24}{r['gpu_seconds']:>9.0f}{r['gpu_seconds_fractional']:>11.0f}{r['energy_kwh']:>9.3f}"
              f"{r['slo_attainment']:>10.4f}{r['goodput_rps']:>11.2f}")
    c = out.get("comparison") or {}
    if c.get("per_operator_gpu_seconds_saving") is not None:
        print(f"per-operator vs model level: {c['per_operator_gpu_seconds_saving']:+.1%} GPU-s, "
              f"{c['per_operator_energy_saving']:+.1%} energy (ablation, same loop and start: "
              f"{c['ablation_gpu_seconds_saving']:+.1%} GPU-s)")
    if out.get("fixed_gpus"):
        f = out["fixed_gpus"]
        print(f"on {f['gpus']} GPUs: " + ", ".join(f"{k} {v['goodput_rps']:.2f}/s (x{v['rate_scale']:.2f})"
                                                 for k, v in f["strategies"].items()))


__all__ = ["KEYS", "WORKLOADS", "asdict", "print_table", "run", "run_autoscale"]
