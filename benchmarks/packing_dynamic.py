"""Dynamic packing on the Alibaba PAI trace: a queue with Poisson arrivals and trace durations, replayed
through the scheduling cycle (gensched.sched), gensched against FGD+FIFO, BestFit+FIFO, FGD+backfill.

Run: python benchmarks/packing_dynamic.py [--data ../shared/data/alibaba-gpu-v2023] [--seeds 10]
       [--loads 0.8,1.0,1.2] [--workers 2] [--out out/packing_dynamic] [--variants]
Prints a markdown table per load and the issue's targets at load 1.0, met or missed. JSON and a plot of
the queueing delay distributions go to --out. ``--variants`` adds gensched alone at load 1.0 with LS above
BE (preemption active), with noisy duration estimates, and with 4 reservations instead of EASY's one
(the baselines use none of these, so their numbers at load 1.0 stand for those runs too).
Protocol: docs/packing.md, "Dynamic packing"; results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gensched.sim.dynamic import GPU_CLASSES, POLICY_NAMES, run_dynamic

BASELINES = [p for p in POLICY_NAMES if p != "gensched"]


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x < 3600 else f"{x / 3600:.2f} h"


def table(block: dict) -> list[str]:
    cls = " | ".join(f"{c} p50 / p99" for c in GPU_CLASSES)
    rows = [f"| policy | alloc % | {cls} | max 8gpu wait | preemptions | moves | lost % of GPU-h |",
            "| --- | ---: |" + " ---: |" * len(GPU_CLASSES) + " ---: | ---: | ---: | ---: |"]
    for name, s in block["policies"].items():
        p50, p99 = s["queue_delay_p50_s"], s["queue_delay_p99_s"]
        cells = " | ".join(f"{fmt_s(p50[c]['median'])} / {fmt_s(p99[c]['median'])}" for c in GPU_CLASSES)
        rows.append(f"| {name} | {100 * s['time_avg_allocation']['median']:.2f} | {cells} | "
                    f"{fmt_s(s['max_wait_8gpu_s']['median'])} | {s['preemptions']['median']:.0f} | "
                    f"{s['moves']['median']:.0f} | {100 * s['preemption_loss_frac']['median']:.3f} |")
    return rows


def targets(block: dict) -> list[tuple[str, bool, str]]:
    """The issue's targets on the 10-seed medians: (target, met, the numbers)."""
    pol = block["policies"]
    g = pol["gensched"]
    base = [b for b in BASELINES if b in pol]
    out = []
    p99 = {n: {c: pol[n]["queue_delay_p99_s"][c]["median"] for c in GPU_CLASSES} for n in pol}
    if "fgd-fifo" in pol:
        for c in GPU_CLASSES:
            gv, fv = p99["gensched"][c], p99["fgd-fifo"][c]
            ok = gv is not None and fv is not None and gv <= 0.7 * fv
            out.append((f"p99 {c} >= 30% below FGD+FIFO", ok, f"{fmt_s(gv)} vs {fmt_s(fv)}"))
    for c in GPU_CLASSES:
        vals = [p99[b][c] for b in base if p99[b][c] is not None]
        best = min(vals) if vals else None
        gv = p99["gensched"][c]
        ok = gv is not None and best is not None and gv <= 1.1 * best
        out.append((f"p99 {c} <= 1.1 x best baseline", ok, f"{fmt_s(gv)} vs {fmt_s(best)}"))
    w = {n: pol[n]["max_wait_8gpu_s"]["median"] for n in pol}
    ok = w["gensched"] is not None and all(w[b] is not None and w["gensched"] < w[b] for b in base)
    out.append(("longest 8-GPU wait below every baseline", ok, ", ".join(f"{n} {fmt_s(w[n])}" for n in pol)))
    a = {n: pol[n]["time_avg_allocation"]["median"] for n in pol}
    ok = all(a["gensched"] >= a[b] for b in base)
    out.append(("allocation >= every baseline", ok, ", ".join(f"{n} {100 * a[n]:.2f}%" for n in pol)))
    loss = g["preemption_loss_frac"]["median"]
    out.append(("preemption losses < 2% of GPU-hours", loss < 0.02, f"{100 * loss:.3f}%"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/alibaba-gpu-v2023"))
    parser.add_argument("--pods", default="default", help="pod list: openb_pod_list_<this>.csv")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--loads", default="0.8,1.0,1.2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="out/packing_dynamic")
    parser.add_argument("--variants", action="store_true", help="also gensched with qos priorities, noisy estimates")
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nodes, pods = data / "openb_node_list_gpu_node.csv", data / f"openb_pod_list_{args.pods}.csv"
    loads = [float(x) for x in args.loads.split(",")]
    res = run_dynamic(nodes, pods, list(POLICY_NAMES), loads, args.seeds, out / "dynamic.json",
                      out / "queue_delays.png", workers=args.workers)  # progress per (load, seed) on stderr
    blocks = {f"{res['load']:g}": res} if "policies" in res else res["loads"]
    print(f"\nwall {res['wall_s']:.0f} s; code {res['code']}; protocol {res['protocol']}")
    for load, block in blocks.items():
        print(f"\n### load {load} (median of {args.seeds} seeds)\n")
        print("\n".join(table(block)))
    if "1" in blocks:
        print("\nTargets at load 1.0:")
        for what, ok, numbers in targets(blocks["1"]):
            print(f"- {'met' if ok else 'MISSED'}: {what} ({numbers})")
    if args.variants:
        for label, opts in (("LS, Burstable, Guaranteed above BE (preemption)", {"priorities": "qos"}),
                            ("noisy estimates (x lognormal, sigma 1)", {"estimates": "noisy"}),
                            ("4 reservations (EASY holds one node)", {"reservations": 4})):
            v = run_dynamic(nodes, pods, ["gensched"], [1.0], args.seeds,
                            out / f"gensched_{'_'.join(map(str, opts.values()))}.json", None, workers=args.workers,
                            quiet=True, **opts)
            print(f"\n### gensched at load 1.0, {label}\n")
            print("\n".join(table(v)))
            if "1" in blocks:
                merged = {"policies": {**blocks["1"]["policies"], "gensched": v["policies"]["gensched"]}}
                for what, ok, numbers in targets(merged):
                    print(f"- {'met' if ok else 'MISSED'}: {what} ({numbers})")


if __name__ == "__main__":
    main()
