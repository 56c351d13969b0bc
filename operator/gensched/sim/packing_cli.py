"""``gensched simulate packing``: compare placement policies on a node list and a pod list (openb CSVs)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from gensched.packing import Allocation, ClusterState, get_placer
from gensched.packing.fgd import TaskMix
from gensched.packing.policies import ALIASES
from gensched.sim.alibaba import LoadReport, TracePod, load_nodes, load_pods
from gensched.sim.packing_sim import RunResult, inflate, run_arrivals, summarise

FIRST_SEED = 42  # the FGD paper's seeds are 42..51


def replay_with_departures(nodes: list, pods: list[TracePod], policy: str, mix: TaskMix, seed: int) -> RunResult:
    """Arrivals at creation_time, departures at deletion_time; the ratio is sampled at every arrival."""
    events: list[tuple[int, int, int]] = []  # (time, 0=depart first, index)
    for i, p in enumerate(pods):
        if p.created is None:
            continue
        events.append((p.created, 1, i))
        if p.deleted is not None and p.deleted > p.created:
            events.append((p.deleted, 0, i))
    events.sort()
    state = ClusterState(nodes)
    placer = get_placer(policy, mix=mix, seed=seed)
    placed: set[int] = set()
    failed = 0
    ratios: list[float] = []
    times: list[float] = []
    t_start = time.perf_counter()
    for _, kind, i in events:
        if kind == 0:
            if i in placed:
                state.release(pods[i].request.key)
                placed.discard(i)
            continue
        t0 = time.perf_counter()
        out = placer.place(state, pods[i].request)
        times.append(time.perf_counter() - t0)
        if isinstance(out, Allocation):
            state.reserve(out)
            placed.add(i)
        else:
            failed += 1
        ratios.append(state.allocated_milli() / state.total_milli())
    step = max(1, len(ratios) // 100)
    return RunResult(policy=placer.name, seed=seed, allocated_gpu_ratio=float(np.mean(ratios)) if ratios else 0.0,
                     allocation_curve=ratios[::step], fragmentation_ratio=state.fragmentation(), failed_pods=failed,
                     pods=len(ratios), wall_s=time.perf_counter() - t_start,
                     decision_p50_ms=float(np.percentile(times, 50) * 1000) if times else 0.0,
                     decision_p99_ms=float(np.percentile(times, 99) * 1000) if times else 0.0)


def run_packing(nodes_csv: Path, pods_csv: Path, policies: list[str], inflation: float, seeds: int,
                json_out: Path | None, plot: Path | None, mode: str = "fgd", quiet: bool = False) -> dict:
    if not 0 < inflation <= 100:
        raise ValueError(f"--inflation {inflation:g}: use a multiple of GPU capacity above 0 (e.g. 1.3)")
    if seeds < 1:
        raise ValueError(f"--seeds {seeds}: use at least 1")
    report = LoadReport()
    nodes = load_nodes(nodes_csv, report)
    pods = load_pods(pods_csv, report, known_models={n.gpu_model for n in nodes})
    if not pods:
        raise ValueError(f"{pods_csv}: no usable pods ({len(report.rejected)} rows rejected)")
    requests = [p.request for p in pods]
    mix = TaskMix.from_requests(requests)
    capacity = sum(n.gpu_count for n in nodes) * 1000
    names = [ALIASES.get(p.strip(), p.strip()) for p in policies if p.strip()]
    for name in names:
        get_placer(name, mix=mix)  # fail fast on an unknown policy
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"cluster: {len(nodes)} GPU nodes, {capacity // 1000} GPUs; pods: {len(pods)} "
        f"({len(report.rejected)} rows rejected); task mix: {len(mix)} typical shapes")
    out: dict = {"nodes": str(nodes_csv), "pods": str(pods_csv), "mode": mode, "inflation": inflation,
                 "seeds": list(range(FIRST_SEED, FIRST_SEED + seeds)), "rejected_rows": report.rejected[:100],
                 "rejected_count": len(report.rejected), "policies": {}}
    for name in names:
        runs = []
        for seed in out["seeds"]:
            if mode == "replay":
                r = replay_with_departures(nodes, pods, name, mix, seed)
            else:
                r = run_arrivals(nodes, inflate(requests, capacity, inflation, seed), name, mix, seed)
            runs.append(r)
            say(f"  {name:<13} seed {seed}: {100 * r.allocated_gpu_ratio:6.2f}% GPUs allocated, "
                f"{r.failed_pods} failed, {r.wall_s:.1f}s")
        out["policies"][name] = summarise(runs)
    print_table(out)
    if json_out is not None:
        json_out.write_text(json.dumps(out, indent=1))
        say(f"wrote {json_out}")
    if plot is not None:
        draw(out, plot)
        say(f"wrote {plot}")
    return out


def print_table(out: dict) -> None:
    what = "mean GPU allocation over the replay" if out["mode"] == "replay" else \
        f"GPU allocation at {100 * out['inflation']:.0f}% arrived workload"
    print(f"\n{what}, median of {len(out['seeds'])} seed(s): {Path(out['pods']).name}")
    print(f"{'policy':<14} {'alloc %':>8} {'min %':>7} {'max %':>7} {'frag':>6} {'failed':>7} {'wall s':>7} "
          f"{'p50 ms':>7} {'p99 ms':>7}")
    for name, s in out["policies"].items():
        per = s["allocated_gpu_ratio"]["per_seed"]
        print(f"{name:<14} {100 * s['allocated_gpu_ratio']['median']:>8.2f} {100 * min(per):>7.2f} "
              f"{100 * max(per):>7.2f} {s['fragmentation_ratio']['median']:>6.3f} {s['failed_pods']['median']:>7.0f} "
              f"{s['wall_s']['median']:>7.1f} {s['decision_p50_ms']:>7.3f} {s['decision_p99_ms']:>7.3f}")


def draw(out: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit("--plot needs matplotlib: pip install 'gensched[plot]'") from exc
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, s in out["policies"].items():
        curve = s["allocation_curve"]
        x = list(range(1, len(curve) + 1))
        ax.plot(x, [100 * v for v in curve], label=f"{name} ({100 * s['allocated_gpu_ratio']['median']:.1f}%)")
    ax.set_xlabel("arrived workload (% of cluster GPU capacity)" if out["mode"] != "replay" else "arrival (percentile)")
    ax.set_ylabel("GPU allocated (%)")
    ax.set_title(f"{Path(out['pods']).name}: median of {len(out['seeds'])} seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
