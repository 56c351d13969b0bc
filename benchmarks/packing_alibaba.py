"""GPU packing on the Alibaba PAI trace (FGD's protocol): every pod list, every policy, 10 seeds.

Run: python benchmarks/packing_alibaba.py [--data ../shared/data/alibaba-gpu-v2023] [--seeds 10]
       [--traces default,gpushare40,...] [--out out/packing]
Prints, per pod list, the median GPU allocation at 130% arrived workload next to FGD's published
median, and the gap between Gensched and our FGD. Per-trace JSON goes to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gensched.sim.packing_cli import run_packing

PUBLISHED_FGD = {"default": 95.40, "gpushare40": 94.14, "multigpu30": 96.48, "gpuspec33": 94.56, "cpu050": 95.20}
PUBLISHED_OTHERS_DEFAULT = {"BestFit": 93.11, "GpuPacking": 92.1, "GpuClustering": 91.8, "DotProduct": 90.8,
                            "Random": 87.4}
POLICIES = "fgd,gensched,bestfit,packing,clustering,dotprod,random"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/alibaba-gpu-v2023"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--traces", default=",".join(PUBLISHED_FGD))
    parser.add_argument("--policy", default=POLICIES)
    parser.add_argument("--out", default="out/packing")
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for trace in args.traces.split(","):
        res = run_packing(data / "openb_node_list_gpu_node.csv", data / f"openb_pod_list_{trace}.csv",
                          args.policy.split(","), 1.3, args.seeds, out / f"{trace}.json", None, quiet=True)
        med = {k: 100 * v["allocated_gpu_ratio"]["median"] for k, v in res["policies"].items()}
        per = {k: v["allocated_gpu_ratio"]["per_seed"] for k, v in res["policies"].items()}
        wins = sum(g >= f for g, f in zip(per.get("Gensched", []), per.get("FGD", []), strict=False))
        rows.append((trace, med, wins, len(res["seeds"])))
    print(f"\nGPU allocation at 130% arrived workload, median of {args.seeds} seeds (seeds 42..)")
    names = list(rows[0][1])
    print(f"{'pod list':<12} {'FGD paper':>9} " + " ".join(f"{n[:10]:>10}" for n in names)
          + f" {'Gen-FGD':>8} {'FGD-paper':>9} {'Gen-paper':>9} {'Gen>=FGD':>8}")
    for trace, med, wins, n in rows:
        paper = PUBLISHED_FGD.get(trace, float("nan"))
        gap = med.get("Gensched", float("nan")) - med.get("FGD", float("nan"))
        repro = med.get("FGD", float("nan")) - paper
        above = med.get("Gensched", float("nan")) - paper
        print(f"{trace:<12} {paper:>9.2f} " + " ".join(f"{med[n]:>10.2f}" for n in names)
              + f" {gap:>+8.2f} {repro:>+9.2f} {above:>+9.2f} {wins:>5}/{n}")
    print("published (default trace): " + ", ".join(f"{k} {v}" for k, v in PUBLISHED_OTHERS_DEFAULT.items()))


if __name__ == "__main__":
    main()
