"""Replay the FGD paper's packing experiment (and an arrival/departure variant) with any policy.

Protocol (as the FGD simulator runs it): all trace pods, plus pods drawn uniformly at random with
replacement (seeded) while the total GPU request stays within ``inflation`` x cluster capacity; the
list is shuffled with the seed and submitted one by one; nothing departs; a pod that fits nowhere
fails. Recorded: the GPU allocation ratio at every 1% of arrived workload, the final ratio, FGD's
fragmentation rate, failures, and per-decision latency.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from gensched.packing import Allocation, ClusterState, GpuNode, GpuRequest, get_placer
from gensched.packing.fgd import TaskMix, fragmentation_rate


@dataclass
class RunResult:
    policy: str
    seed: int
    allocated_gpu_ratio: float  # allocated milli-GPU / capacity at the end
    allocation_curve: list[float]  # ratio at arrived workload 1%, 2%, ... of capacity
    fragmentation_ratio: float
    failed_pods: int
    pods: int
    wall_s: float
    decision_p50_ms: float
    decision_p99_ms: float
    failure_reasons: dict[str, int] = field(default_factory=dict)


def inflate(requests: list[GpuRequest], capacity_milli: int, inflation: float, seed: int) -> list[GpuRequest]:
    """Trace pods plus seeded random draws up to ``inflation`` x capacity, shuffled with the seed."""
    rng = random.Random(seed)
    out = list(requests)
    total = sum(r.milli_total for r in requests)
    limit = inflation * capacity_milli
    i = 0
    while True:
        r = requests[rng.randrange(len(requests))]
        if total + r.milli_total > limit:
            break
        i += 1
        out.append(GpuRequest(key=f"{r.key}~{i}", whole_gpus=r.whole_gpus, gpu_milli=r.gpu_milli,
                              gpu_memory_gib=r.gpu_memory_gib, cpu_milli=r.cpu_milli, memory_mib=r.memory_mib,
                              gpu_models=r.gpu_models))
        total += r.milli_total
    rng.shuffle(out)
    return out


def run_arrivals(nodes: list[GpuNode], workload: list[GpuRequest], policy: str, mix: TaskMix, seed: int,
                 progress: Callable[[int, int], None] | None = None) -> RunResult:
    state = ClusterState(nodes)
    placer = get_placer(policy, mix=mix, seed=seed)
    capacity = state.total_milli()
    curve: list[float] = []
    arrived = 0
    failed = 0
    reasons: dict[str, int] = {}
    times = np.empty(len(workload))
    t_start = time.perf_counter()
    for n, req in enumerate(workload):
        t0 = time.perf_counter()
        out = placer.place(state, req)
        times[n] = time.perf_counter() - t0
        if isinstance(out, Allocation):
            state.reserve(out)
        else:
            failed += 1
            kind = out.reason.split(":")[0][:60]
            reasons[kind] = reasons.get(kind, 0) + 1
        arrived += req.milli_total
        while len(curve) < int(100 * arrived / capacity):
            curve.append(state.allocated_milli() / capacity)
        if progress is not None and n % 500 == 0:
            progress(n, len(workload))
    wall = time.perf_counter() - t_start
    return RunResult(
        policy=placer.name, seed=seed,
        allocated_gpu_ratio=state.allocated_milli() / capacity,
        allocation_curve=curve,
        fragmentation_ratio=fragmentation_rate(state, mix),
        failed_pods=failed, pods=len(workload), wall_s=wall,
        decision_p50_ms=float(np.percentile(times, 50) * 1000),
        decision_p99_ms=float(np.percentile(times, 99) * 1000),
        failure_reasons=reasons,
    )


def summarise(runs: list[RunResult]) -> dict:
    """Per-policy JSON block: per-seed values and medians (curve: median per percent)."""
    ratios = [r.allocated_gpu_ratio for r in runs]
    width = min(len(r.allocation_curve) for r in runs)
    curve = np.median(np.array([r.allocation_curve[:width] for r in runs]), axis=0) if width else np.array([])
    med = lambda xs: float(np.median(xs))  # noqa: E731
    return {
        "allocated_gpu_ratio": {"median": med(ratios), "per_seed": ratios},
        "allocation_curve": [round(float(x), 6) for x in curve],
        "fragmentation_ratio": {"median": med([r.fragmentation_ratio for r in runs]),
                                "per_seed": [r.fragmentation_ratio for r in runs]},
        "failed_pods": {"median": med([r.failed_pods for r in runs]), "per_seed": [r.failed_pods for r in runs]},
        "wall_s": {"median": med([r.wall_s for r in runs]), "per_seed": [r.wall_s for r in runs]},
        "decision_p50_ms": med([r.decision_p50_ms for r in runs]),
        "decision_p99_ms": med([r.decision_p99_ms for r in runs]),
        "runs": [asdict(r) | {"allocation_curve": None} for r in runs],
    }
