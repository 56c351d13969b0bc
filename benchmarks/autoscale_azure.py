"""Per-operator vs model-level autoscaling on the Azure LLM traces (modelled GPUs): the table of
docs/benchmarks.md.

Run: .venv/bin/python benchmarks/autoscale_azure.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from gensched.sim.autoscale_cli import run_autoscale


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=os.environ.get("GENSCHED_SHARED_DATA", "../shared/data"))
    ap.add_argument("--model", default="llama-7b")
    ap.add_argument("--gpu", default="h100")
    args = ap.parse_args()
    root = Path(args.data) / "azure-llm-2023"
    traces = [root / "AzureLLMInferenceTrace_conv.csv", root / "AzureLLMInferenceTrace_code.csv"]
    if not all(t.is_file() for t in traces):
        print(f"traces not found under {root}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    print(f"{'trace':<6}{'rate':>5} {'baseline':<11}{'strategy':<10}{'GPU-s':>8}{'kWh':>8}{'TTFT p99':>10}"
          f"{'TBT p99':>9}{'SLO att.':>9}{'decis.':>7}{'replay s':>9}")
    verdicts = []
    for trace in traces:
        for rate in (1.0, 10.0):
            for baseline in ("whole", "fractional"):
                out = run_autoscale(trace, args.model, args.gpu, 1000.0, 100.0, rate, baseline, None, quiet=True)
                s = out["strategies"]
                for name, r in s.items():
                    print(f"{trace.stem.split('_')[-1]:<6}{rate:>5g} {baseline:<11}{name:<10}{r['gpu_seconds']:>8.0f}"
                          f"{r['energy_kwh']:>8.3f}{r['ttft_p99_ms']:>10.0f}{r['tbt_p99_ms']:>9.1f}"
                          f"{r['slo_attainment']:>9.4f}{r['decisions']:>7}{r['wall_s']:>9.1f}")
                op, ml = s["operator"], s["model"]
                gpu_saving = 100 * (1 - op["gpu_seconds"] / ml["gpu_seconds"])
                energy_saving = 100 * (1 - op["energy_kwh"] / ml["energy_kwh"])
                verdicts.append((trace.stem.split("_")[-1], rate, baseline, gpu_saving, energy_saving,
                                 op["slo_attainment"]))
    print("\nper-operator vs model-level: GPU-seconds saved, energy saved, per-operator SLO attainment "
          "(target: >= 40%, >= 35%, >= 0.99)")
    for trace, rate, baseline, g, e, att in verdicts:
        met = g >= 40 and e >= 35 and att >= 0.99
        print(f"  {trace:<5} x{rate:<4g} {baseline:<11} {g:7.1f}% {e:7.1f}% {att:.4f}  {'met' if met else 'NOT met'}")
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
