"""Placement speed and memory: the Alibaba cluster at 1x (1,213 nodes) and replicated 10x (12,130 nodes).

Run: python benchmarks/packing_speed.py [--data ../shared/data/alibaba-gpu-v2023] [--policy FGD,Gensched]
Each scale runs the FGD protocol (inflation 1.3, seed 42) with the pod list replicated to match the
cluster, and prints wall time, decision p50/p99 and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
from dataclasses import replace
from pathlib import Path

from gensched.packing.fgd import TaskMix
from gensched.sim.alibaba import load_nodes, load_pods
from gensched.sim.packing_sim import inflate, run_arrivals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/alibaba-gpu-v2023"))
    parser.add_argument("--policy", default="FGD,Gensched")
    parser.add_argument("--scales", default="1,10")
    args = parser.parse_args()
    data = Path(args.data)
    base_nodes = load_nodes(data / "openb_node_list_gpu_node.csv")
    base_reqs = [p.request for p in load_pods(data / "openb_pod_list_default.csv")]
    print(f"{'policy':<10} {'nodes':>6} {'pods':>7} {'alloc %':>8} {'wall s':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'peak MB':>8}")
    for scale in (int(s) for s in args.scales.split(",")):
        nodes = [replace(n, name=f"{n.name}-{k}") for k in range(scale) for n in base_nodes]
        reqs = [replace(r, key=f"{r.key}-{k}") for k in range(scale) for r in base_reqs]
        mix = TaskMix.from_requests(reqs)
        workload = inflate(reqs, sum(n.gpu_count for n in nodes) * 1000, 1.3, 42)
        for policy in args.policy.split(","):
            r = run_arrivals(nodes, workload, policy, mix, 42)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{r.policy:<10} {len(nodes):>6} {r.pods:>7} {100 * r.allocated_gpu_ratio:>8.2f} {r.wall_s:>7.1f} "
                  f"{r.decision_p50_ms:>7.3f} {r.decision_p99_ms:>7.3f} {peak:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
