"""``gensched simulate`` with no arguments: a short tour of each capability on built-in data."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from gensched.api import SchedulingPolicySpec
from gensched.api.sizing import model_memory_gib
from gensched.autoscale.roofline import profile
from gensched.autoscale.sizing import SLO
from gensched.packing import POLICIES, Allocation, ClusterState, get_placer
from gensched.packing.fgd import TaskMix
from gensched.packing.requests import request_for
from gensched.sim.autoscale_sim import Trace, replay
from gensched.sim.synthetic import synthetic_cluster, synthetic_jobs
from gensched.timing import decide_start
from gensched.timing.series import Series


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
    if nodes < 1 or jobs < 1 or seed < 0:
        raise ValueError(f"--nodes {nodes}, --jobs {jobs}, --seed {seed}: nodes and jobs must be at least 1, "
                         "the seed not negative")
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
    _carbon_section(seed)
    _autoscale_section(seed)
    return 0


def _carbon_section(seed: int) -> None:
    """CarbonAware on a built-in week: a daily cycle with noise (real data: gensched simulate timing)."""
    rng = np.random.default_rng(seed)
    t = np.arange(48 * 14)
    hours = (t % 48) / 2
    ci = 300 + 120 * np.cos(2 * np.pi * (hours - 18) / 24) + rng.normal(0, 15, len(t))  # dirty evening peak
    series = Series(datetime(2026, 11, 16, tzinfo=UTC), timedelta(minutes=30), ci)
    spec = SchedulingPolicySpec.model_validate({"timing": {
        "mode": "CarbonAware", "maxDeferral": "24h", "carbon": {"provider": "CSV", "csvPath": "built-in"}}})
    print("\n4. Carbon-aware time shifting (built-in signal: daily cycle, 180-420 gCO2/kWh)")
    now = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
    for deadline_h, est_h, inter in ((20, 3, False), (20, 3, True), (4, 3, False)):
        d = decide_start(now, spec.timing, now + timedelta(hours=deadline_h), timedelta(hours=est_h), series, inter)
        kind = "interruptible" if inter else "in one go"
        saving = f"{d.saving_pct:.0f}% less CO2" if d.saving_pct is not None else d.reason
        print(f"   {est_h}h {kind}, deadline +{deadline_h}h -> start {d.start:%a %H:%M}Z "
              f"in {len(d.slots) or 1} slot(s): {saving}")


def _autoscale_section(seed: int) -> None:
    """Static vs model-level vs per-operator on a built-in bursty hour (modelled Llama-7B on H100)."""
    rng = np.random.default_rng(seed)
    rate = np.where((np.arange(3600) // 600) % 2 == 0, 2.0, 8.0)  # 10-minute calm/busy phases
    arrivals = np.flatnonzero(rng.poisson(rate) > 0).astype(float)
    trace = Trace(arrivals, rng.integers(200, 2000, len(arrivals)), rng.integers(20, 400, len(arrivals)), "built-in")
    prof = profile("llama-7b", "h100")
    print("\n5. Serving (modelled Llama-7B on H100, SLO TTFT 1 s / TBT 100 ms, a built-in bursty hour)")
    print(f"   {'strategy':<10} {'GPU-s':>7} {'SLO att.':>9} {'decisions':>10}")
    for strategy in ("static", "model", "operator"):
        r = replay(trace, prof, SLO(1000, 100), strategy, (1.0, 2.0, 4.0, 8.0))
        print(f"   {strategy:<10} {r.gpu_seconds:>7.0f} {r.slo_attainment:>9.3f} {r.decisions:>10}")
    print("   (real traces and the full comparison: gensched simulate autoscale; docs/benchmarks.md)")
