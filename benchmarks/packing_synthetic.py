"""Packing policies on the built-in synthetic cluster: placed jobs, GPU allocation, decision latency.

Run: python benchmarks/packing_synthetic.py [--nodes 16] [--jobs 200] [--seeds 5]
Prints a table (median over seeds). The Alibaba-trace benchmark against FGD comes with issue 3.
"""

from __future__ import annotations

import argparse
import statistics
import time

from gensched.packing import POLICIES
from gensched.sim.tour import replay_packing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(f"synthetic cluster: {args.nodes} nodes, {args.jobs} jobs, median of {args.seeds} seeds")
    print(f"{'policy':<14} {'placed':>7} {'GPU alloc %':>12} {'frag %':>8} {'p99 ms':>8} {'wall s':>8}")
    for name in [*POLICIES, "Gensched"]:
        t0 = time.perf_counter()
        runs = [replay_packing(name, args.nodes, args.jobs, seed) for seed in range(args.seeds)]
        wall = (time.perf_counter() - t0) / args.seeds
        med = lambda xs: statistics.median(xs)  # noqa: E731
        print(f"{name:<14} {med([r.placed for r in runs]):>7.0f} {med([r.allocated_pct for r in runs]):>12.1f} "
              f"{med([r.fragmentation_pct for r in runs]):>8.1f} {med([r.decision_ms_p99 for r in runs]):>8.3f} "
              f"{wall:>8.3f}")


if __name__ == "__main__":
    main()
