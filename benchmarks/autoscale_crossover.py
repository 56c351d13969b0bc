"""Where splitting a dense LLM pays (issue 10): the crossover map of docs/benchmarks.md.

    .venv/bin/python benchmarks/autoscale_crossover.py [--minutes 10] [--json OUT.json]

Models Llama-2 7B / 13B / 70B on H100 (modelled), prompts as recorded (x1) or 4x longer, rate x1 / x10 /
x30, and three granularities: whole-model replicas (``model_level``, the baseline, its replica size and
headroom tuned by replaying), typed operators (``per_operator``: embedding, attention, FFN, LM head) and
prefill/decode pools (``prefill_decode``). Arrivals: the first ``--minutes`` of the Azure conversation
trace; rate xK keeps its time shape (each request K times, jittered within +-0.5 s), so autoscaling sees
the same minutes at K times the load. SLO TTFT 1 s / TBT 100 ms. Every strategy's control loop runs every
10 s here (the map is about granularity; the loop-speed ablation is in autoscale_serving.py). A cell
compares GPU-seconds (whole GPUs after packing) at equal SLO attainment: "win" / "loss" when the split
meets the SLO at least as often as the baseline (or both reach 99%), "worse SLO" otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONV = ROOT.parent / "shared" / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
MODELS = ("llama-7b", "llama-13b", "llama-70b")
PROMPTS = (1, 4)
RATES = (1, 10, 30)


def verdict(split: dict, base: dict) -> str:
    a, b = split["slo_attainment"], base["slo_attainment"]
    if a + 0.005 < b and not (a >= 0.99 and b >= 0.99):
        return "worse SLO"
    saving = 1 - split["gpu_seconds"] / base["gpu_seconds"] if base["gpu_seconds"] else 0.0
    return f"{'win' if saving > 0 else 'loss'} {saving:+.0%}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--json", default="/tmp/gensched-autoscale/crossover.json")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    if not CONV.exists():
        print(f"missing {CONV} (../shared/data/README.md)", file=sys.stderr)
        return 2
    from gensched.autoscale.roofline import profile
    from gensched.autoscale.sizing import SLO
    from gensched.sim.autoscale_llm import compare, replicated, trace_of
    from gensched.sim.autoscale_sim import Trace
    from gensched.sim.autoscale_workloads import load_arrivals

    base = trace_of(load_arrivals(CONV).window(0, args.minutes * 60))
    slo = SLO(1000, 100)
    cells = []
    print("| model | prompt | rate | model level GPU-s (att.) | per-operator GPU-s (att.) | prefill/decode GPU-s "
          "(att.) | per-operator | prefill/decode |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for model in args.models.split(","):
        prof = profile(model, "h100")
        for px in PROMPTS:
            for rate in RATES:
                tr = Trace(base.arrival, np.maximum(1, base.prompt * px).astype(int), base.output, base.name)
                tr = replicated(tr, rate, seed=rate) if rate > 1 else tr
                t0 = time.perf_counter()
                try:
                    out, _ = compare(tr, prof, slo, lambda s: None, model_shares=(0.5, 1.0, 2.0, 4.0, 8.0),
                                     headrooms=(1.2, 1.5), extras=False, per_operator_loop_s=10)
                except ValueError as exc:
                    print(f"| {model} | x{px} | x{rate} | {exc} | | | | |", flush=True)
                    cells.append({"model": model, "prompt": px, "rate": rate, "error": str(exc)})
                    continue
                ml, po, pd = out["model_level"], out["per_operator"], out["prefill_decode"]
                cell = {"model": model, "prompt": px, "rate": rate, "requests": len(tr.arrival),
                        "wall_s": round(time.perf_counter() - t0, 1),
                        **{k: {x: v[x] for x in ("gpu_seconds", "gpu_seconds_fractional", "energy_kwh",
                                                 "slo_attainment", "goodput_rps", "shares")}
                           for k, v in out.items()},
                        "per_operator_verdict": verdict(po, ml), "prefill_decode_verdict": verdict(pd, ml)}
                cells.append(cell)
                print(f"| {model} | x{px} | x{rate} | {ml['gpu_seconds']:.0f} ({ml['slo_attainment']:.3f}) | "
                      f"{po['gpu_seconds']:.0f} ({po['slo_attainment']:.3f}) | {pd['gpu_seconds']:.0f} "
                      f"({pd['slo_attainment']:.3f}) | {cell['per_operator_verdict']} | "
                      f"{cell['prefill_decode_verdict']} |", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"minutes": args.minutes, "slo": [1000, 100], "cells": cells}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
