"""``gensched simulate`` with no arguments: a short tour of each capability on built-in data."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gensched.api import SchedulingPolicySpec
from gensched.api.sizing import model_memory_gib
from gensched.packing import POLICIES, Allocation, ClusterState, get_placer
from gensched.packing.fgd import TaskMix
from gensched.packing.requests import request_for
from gensched.sim.synthetic import synthetic_cluster, synthetic_jobs
from gensched.timing import decide_start


@dataclass
class PackingResult:
    policy: str
    placed: int
    failed: int
    allocated_pct: float
    fragmentation_pct: float
    decision_ms_p99: float


def replay_packing(policy: str, nodes: int, jobs: int, seed: int) -> PackingResult:
    state = ClusterState(synthetic_cluster(nodes, seed))
    requests = [request_for(job.name, job.spec) for job in synthetic_jobs(jobs, seed)]
    placer = get_placer(policy, mix=TaskMix.from_requests(requests), seed=seed)
    placed = failed = 0
    times = []
    for req in requests:
        t0 = time.perf_counter()
        outcome = placer.place(state, req)
        times.append((time.perf_counter() - t0) * 1000)
        if isinstance(outcome, Allocation):
            state.reserve(outcome)
            placed += 1
        else:
            failed += 1
    times.sort()
    return PackingResult(policy, placed, failed, 100 * state.allocated_milli() / state.total_milli(),
                         100 * state.fragmentation(), times[int(0.99 * (len(times) - 1))])


def run_tour(seed: int = 7, nodes: int = 16, jobs: int = 200, policy: str = "all") -> int:
    cluster = synthetic_cluster(nodes, seed)
    gpus = sum(n.gpu_count for n in cluster)
    print("gensched simulate: built-in synthetic cluster and job mix (no cluster, no files needed)")
    print(f"  cluster: {nodes} GPU nodes, {gpus} GPUs "
          f"({', '.join(sorted({n.gpu_model for n in cluster}))}); jobs: {jobs} batch jobs, seed {seed}")
    print("\n1. Right-sizing by precision (GPU memory = params x bytes/param x 1.2 + 1 GiB)")
    for params in (7, 70):
        row = ", ".join(f"{p} {model_memory_gib(params, p):6.1f} GiB" for p in ("fp16", "int8", "int4"))
        print(f"   {params:>3}B model: {row}")
    print("\n2. GPU packing (arrivals one by one, none departs)")
    print(f"   {'policy':<13} {'placed':>7} {'failed':>7} {'GPU alloc %':>12} {'frag %':>8} {'p99 ms':>8}")
    names = [*POLICIES, "Gensched"] if policy == "all" else [policy]
    for name in names:
        r = replay_packing(name, nodes, jobs, seed)
        print(f"   {r.policy:<13} {r.placed:>7} {r.failed:>7} {r.allocated_pct:>12.1f} "
              f"{r.fragmentation_pct:>8.1f} {r.decision_ms_p99:>8.3f}")
    print("\n3. Time shifting (OffPeak policy, 22:00-06:00 Europe/Berlin on workdays)")
    policy_spec = SchedulingPolicySpec.model_validate({"timing": {
        "mode": "OffPeak", "maxDeferral": "24h",
        "offPeakWindows": [{"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "22:00", "end": "06:00",
                            "timezone": "Europe/Berlin"}]}})
    now = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)  # a Tuesday morning
    for deadline_h, est_h in ((30, 2), (6, 2), (2, 3)):
        d = decide_start(now, policy_spec.timing, now + timedelta(hours=deadline_h), timedelta(hours=est_h))
        print(f"   submitted {now:%a %H:%M}Z, deadline +{deadline_h}h, runs {est_h}h -> "
              f"start {d.start:%a %H:%M}Z ({d.reason})")
    print("\n4. Per-operator autoscaling: not in this build yet (see docs/roadmap.md).")
    return 0
