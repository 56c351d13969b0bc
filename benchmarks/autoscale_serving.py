"""Per-operator vs model-level serving (issue 10): the tables of docs/benchmarks.md "Per-operator
autoscaling by operator type".

    .venv/bin/python benchmarks/autoscale_serving.py [--out DIR] [--only diffusion,moe,llm,diffusion-cpu]

Each case is one `gensched simulate autoscale` command (printed); its JSON goes to DIR (default
/tmp/gensched-autoscale). Needs ../shared/data/azure-llm-2023/ (the arrivals) and, for the
diffusion-cpu case, benchmarks/profiles/sd15-cpu.json (benchmarks/autoscale_profiles.py --cpu).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "azure-llm-2023"
CONV = DATA / "AzureLLMInferenceTrace_conv.csv"
CASES = {
    "diffusion": ["--workload", "diffusion", "--rate-scale", "4", "--fixed-gpus", "8"],
    "diffusion-cpu": ["--workload", "diffusion", "--rate-scale", "4", "--profile",
                      str(ROOT / "benchmarks/profiles/sd15-cpu.json")],
    "moe": ["--workload", "moe", "--rate-scale", "10", "--fixed-gpus", "16"],
    "llm": ["--workload", "llm", "--rate-scale", "10"],
}


def table(out: dict) -> str:
    rows = ["| strategy | GPU-s (whole) | GPU-s (fractional) | kWh | SLO attainment | goodput req/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in out["strategies"].items():
        rows.append(f"| {name} | {r['gpu_seconds']:.0f} | {r['gpu_seconds_fractional']:.0f} | {r['energy_kwh']:.3f} | "
                    f"{r['slo_attainment']:.4f} | {r['goodput_rps']:.2f} |")
    c = out["comparison"]
    rows.append("")
    rows.append(f"per-operator vs model level: GPU-s saving {c['per_operator_gpu_seconds_saving']:+.1%}, energy saving "
                f"{c['per_operator_energy_saving']:+.1%}; ablation (same loop period and start time): "
                f"{c['ablation_gpu_seconds_saving']:+.1%}")
    if out.get("fixed_gpus"):
        f = out["fixed_gpus"]["strategies"]
        ml, po = f["model_level"]["goodput_rps"], f["per_operator"]["goodput_rps"]
        rows.append(f"on {out['fixed_gpus']['gpus']} GPUs: model level {ml:.2f} req/s "
                    f"(x{f['model_level']['rate_scale']:.2f}), per-operator {po:.2f} req/s "
                    f"(x{f['per_operator']['rate_scale']:.2f}): {po / ml if ml else float('nan'):.2f}x")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/gensched-autoscale")
    ap.add_argument("--only", default=",".join(CASES))
    args = ap.parse_args(argv)
    if not CONV.exists():
        print(f"missing {CONV}: get the Azure LLM inference traces (../shared/data/README.md)", file=sys.stderr)
        return 2
    from gensched.cli import build_parser
    from gensched.sim.autoscale_cli import run

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        json_path = out_dir / f"{name}.json"
        argv_case = ["simulate", "autoscale", "--trace", str(CONV), *CASES[name], "--json", str(json_path)]
        print(f"\n### {name}\n`gensched {shlex.join(argv_case).replace(str(ROOT.parent), '..')}`\n", flush=True)
        t0 = time.perf_counter()
        ns = build_parser().parse_args(argv_case)
        out = run(ns)
        print(table(out))
        print(f"\n({time.perf_counter() - t0:.0f} s; {json.dumps(out['comparison'])})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
