"""Dynamic packing replay (sim/dynamic.py): a queue with Poisson arrivals and trace durations, run through
the scheduling cycle. Small synthetic clusters; every assertion is about the replay's own bookkeeping."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from gensched.cli import main
from gensched.packing import ClusterState, GpuNode, GpuRequest, get_placer
from gensched.packing.fgd import TaskMix
from gensched.sched import schedule
from gensched.sim.dynamic import (
    DynamicConfig,
    Trace,
    _policies,
    make_arrivals,
    run_dynamic_one,
    task_class,
)
from tests.unit.test_sched_cycle import snapshots

POLICIES = _policies(600.0)


def synthetic_trace(n8: int = 3, n2: int = 2) -> Trace:
    nodes = [GpuNode(f"a{i}", 8, "A100", 80.0, 96_000, 512 * 1024) for i in range(n8)]
    nodes += [GpuNode(f"b{i}", 2, "T4", 16.0, 32_000, 128 * 1024) for i in range(n2)]
    shapes = [  # (whole, milli, cpu, duration s, qos)
        (0, 500, 4000, 300, "BE"), (0, 250, 2000, 900, "LS"), (1, 1000, 8000, 600, "LS"), (1, 1000, 6000, 200, "BE"),
        (2, 1000, 16000, 1200, "LS"), (4, 1000, 32000, 400, "Burstable"), (8, 1000, 64000, 900, "LS"),
        (0, 0, 4000, 500, "LS"),
    ]
    reqs = [GpuRequest(f"s{i}", whole_gpus=w, gpu_milli=m, cpu_milli=c, memory_mib=8192)
            for i, (w, m, c, _, _) in enumerate(shapes)]
    return Trace(nodes=nodes, requests=reqs, durations=np.array([s[3] for s in shapes]),
                 qos=[s[4] for s in shapes], classes=[task_class(r) for r in reqs],
                 mix=TaskMix.from_requests(reqs), stats={})


@cache
def trace() -> Trace:
    return synthetic_trace()


def replay(policy: str, load: float = 1.1, seed: int = 42, **kw):
    kw.setdefault("cycle_s", 1.0)
    cfg = DynamicConfig(load=load, warmup_h=0.25, horizon_h=1.5, checkpoint_min=10, **kw)
    arrivals = make_arrivals(trace(), cfg, seed)
    log: list[tuple] = []
    stats = run_dynamic_one(trace(), arrivals, POLICIES[policy], cfg, seed, log=log)
    return stats, log, arrivals


def test_every_arrival_is_placed_once_per_stint_or_still_waiting():
    for name in POLICIES:
        stats, log, arrivals = replay(name, priorities="qos")
        stream = [f"t{i}" for i in range(arrivals.initial, len(arrivals.kind))]
        assert [e[2] for e in log if e[0] == "arrive" and e[2] in set(stream)] == stream  # all, in order
        placed = Counter(e[2] for e in log if e[0] == "place")
        evicted = Counter(e[2] for e in log if e[0] == "evict")
        waiting_at_end = set()
        for key in stream:  # placed once on arrival, then once again per eviction, or still waiting
            assert placed[key] in (evicted[key], evicted[key] + 1), (name, key)
            if placed[key] == evicted[key]:
                waiting_at_end.add(key)
        measured = {f"t{i}" for i in range(arrivals.initial, len(arrivals.kind)) if arrivals.at[i] >= 900}
        assert sum(stats.still_waiting.values()) == len(waiting_at_end & measured)
        assert sum(stats.jobs.values()) == len(measured)
        if name != "gensched":
            assert not evicted  # baselines never preempt or move


def test_nothing_is_over_committed_and_departures_come_after_the_work():
    trace_ = trace()
    for name in POLICIES:
        _, log, arrivals = replay(name, priorities="qos")
        held: dict[str, tuple[str, int]] = {}
        used: Counter = Counter()
        cap = {n.name: n.gpu_count * 1000 for n in trace_.nodes}
        milli = {f"t{i}": trace_.requests[int(k)].milli_total for i, k in enumerate(arrivals.kind)}
        started: dict[str, float] = {}
        for ev in log:
            kind, t, key = ev[:3]
            if kind in ("place", "fill"):
                held[key] = (ev[3], milli[key])
                used[ev[3]] += milli[key]
                started[key] = t
                assert used[ev[3]] <= cap[ev[3]], (name, ev)
            elif kind in ("depart", "evict"):
                node, m = held.pop(key)
                used[node] -= m
                if kind == "depart" and key in started and t > 0:
                    assert t > started[key]
        assert all(v >= 0 for v in used.values())


def test_time_averaged_allocation_is_the_integral_of_what_was_held():
    for name in ("gensched", "fgd-fifo"):
        stats, log, arrivals = replay(name, priorities="qos")
        milli = {f"t{i}": trace().requests[int(k)].milli_total for i, k in enumerate(arrivals.kind)}
        held = area = 0.0
        last = 900.0
        for kind, t, key, *_ in log:
            if t > last:
                area += held * (min(t, 5400.0) - last)
                last = t
            held += milli[key] if kind in ("place", "fill") else -milli[key] if kind in ("depart", "evict") else 0
        area += held * (5400.0 - last)
        assert abs(stats.time_avg_allocation - area / (trace().capacity_gpus * 1000 * 4500)) < 1e-9


def test_strict_fifo_starts_jobs_in_arrival_order():
    for name in ("fgd-fifo", "bestfit-fifo"):
        _, log, arrivals = replay(name, load=1.3)
        at = {f"t{i}": float(a) for i, a in enumerate(arrivals.at)}
        order = [at[e[2]] for e in log if e[0] == "place"]
        assert order and order == sorted(order), name
    _, log, arrivals = replay("fgd-backfill", load=1.3)
    at = {f"t{i}": float(a) for i, a in enumerate(arrivals.at)}
    order = [at[e[2]] for e in log if e[0] == "place"]
    assert order != sorted(order)  # unrestricted backfill does pass blocked jobs here


def test_arrivals_are_identical_across_policies_and_shared_across_loads():
    logs = {}
    for name in POLICIES:
        _, log, _ = replay(name)
        logs[name] = [e for e in log if e[0] == "arrive"]
    first = next(iter(logs.values()))
    assert all(v == first for v in logs.values())
    low, high = (make_arrivals(trace(), DynamicConfig(load=x, warmup_h=0.25, horizon_h=1.5), 42) for x in (0.8, 1.2))
    n = len(low.kind) - low.initial
    assert n < len(high.kind) - high.initial
    assert (low.kind[low.initial:] == high.kind[high.initial:high.initial + n]).all()  # same task sequence


def test_offered_load_is_rate_times_gpu_seconds_over_capacity():
    tr = trace()
    arr = make_arrivals(tr, DynamicConfig(load=0.9, warmup_h=0.25, horizon_h=1.5), 7)
    offered = arr.rate * float((tr.gpus * tr.durations).mean()) / tr.capacity_gpus
    assert abs(offered - 0.9) < 1e-9
    age = -arr.at[:arr.initial]
    assert (age >= 0).all() and (arr.work[:arr.initial] >= 1).all()  # warm start: part done, some left
    assert (np.diff(arr.at[arr.initial:]) >= 0).all()


def test_skipping_idle_cycles_changes_nothing():
    for name in ("fgd-fifo", "bestfit-fifo", "fgd-backfill"):
        cfg = DynamicConfig(load=1.3, warmup_h=0.25, horizon_h=1.5, cycle_s=1.0)
        arrivals = make_arrivals(trace(), cfg, 43)
        fast, slow = [], []
        a = run_dynamic_one(trace(), arrivals, POLICIES[name], cfg, 43, log=fast)
        b = run_dynamic_one(trace(), arrivals, POLICIES[name], cfg, 43, log=slow, skip_idle=False)
        assert fast == slow, name
        assert a.cycles <= b.cycles
        assert dataclasses.replace(a, cycles=0, wall_s=0) == dataclasses.replace(b, cycles=0, wall_s=0)


def test_evicted_work_resumes_with_only_the_work_since_its_checkpoint_lost():
    stats, log, arrivals = replay("gensched", load=1.3, priorities="qos")
    evictions = [e for e in log if e[0] == "evict"]
    assert evictions, "expected LS jobs to preempt BE jobs on this overloaded cluster"
    assert stats.preemptions + stats.moves <= len(evictions)
    assert 0 <= stats.preemption_loss_frac < 1
    # every stint of every job: time on GPUs sums to its duration plus what evictions threw away (< 10 min each)
    dur = {f"t{i}": float(w) for i, w in enumerate(arrivals.work)}
    ran: Counter = Counter()
    since: dict[str, float] = {}
    for ev in log:
        if ev[0] in ("place", "fill"):
            since[ev[2]] = ev[1]
        elif ev[0] in ("evict", "depart"):
            ran[ev[2]] += ev[1] - since.pop(ev[2])
            if ev[0] == "depart":
                n_evict = sum(1 for e in evictions if e[2] == ev[2])
                if ev[2] in {e[2] for e in log if e[0] == "place"}:  # placed in the run (not a warm-start job)
                    assert dur[ev[2]] <= ran[ev[2]] <= dur[ev[2]] + 600 * n_evict + 1e-6


def test_cycles_run_on_ticks_and_estimates_may_be_noisy_or_missing():
    _, log, _ = replay("gensched", cycle_s=10.0)
    assert {e[1] % 10 for e in log if e[0] in ("place", "evict")} == {0.0}  # decisions only on 10 s ticks
    exact, _, _ = replay("gensched")
    for mode in ("noisy", "none"):
        stats, _, _ = replay("gensched", estimates=mode)
        assert 0 < stats.time_avg_allocation <= 1
        assert sum(stats.jobs.values()) == sum(exact.jobs.values())  # the same arrivals are measured


def test_be_tasks_are_the_interruptible_ones():
    _, log, arrivals = replay("gensched", load=1.3, priorities="qos")
    qos = {f"t{i}": trace().qos[int(k)] for i, k in enumerate(arrivals.kind)}
    assert {qos[e[2]] for e in log if e[0] == "evict"} <= {"BE"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(snapshots())
def test_the_cycle_decides_the_same_with_a_per_node_index(snap):
    """``Snapshot.running_by_node`` (the simulator's live index) is only a faster way to read ``running``."""
    other = dataclasses.replace(snap, state=ClusterState(snap.state.nodes))
    for r in snap.running:
        other.state.reserve(r.alloc)
    by_node: dict[str, list] = {}
    for r in snap.running:
        by_node.setdefault(r.alloc.node, []).append(r)
    other.running_by_node = by_node
    a, b = schedule(snap, cache(get_placer)), schedule(other, cache(get_placer))  # same seeded placers
    assert [(p.key, p.alloc) for p in a.placed] == [(p.key, p.alloc) for p in b.placed]
    assert a.waiting == b.waiting and a.evictions == b.evictions and a.head == b.head


def _csvs(tmp_path: Path) -> tuple[Path, Path]:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\n" + "".join(
        f"n{i},96000,524288,8,A100\n" for i in range(3)) + "m0,32000,131072,2,T4\n")
    rows = ["name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
            "scheduled_time"]
    specs = [(1, 500, "BE", 300), (1, 1000, "LS", 600), (2, 1000, "LS", 900), (8, 1000, "LS", 1200),
             (0, 0, "LS", 400), (1, 1000, "BE", 0), (1, 250, "LS", 200)]
    for i, (n, m, q, d) in enumerate(specs):
        rows.append(f"p{i},4000,8192,{n},{m},,{q},Running,{100 * i},{100 * i + d},{100 * i}")
    rows.append("p-bad,4000,8192,1,1000,,LS,Running,500,")  # no deletion time: dropped
    pods = tmp_path / "pods.csv"
    pods.write_text("\n".join(rows) + "\n")
    return nodes, pods


def test_cli_writes_the_documented_json(tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    nodes, pods = _csvs(tmp_path)
    out = tmp_path / "out.json"
    rc = main(["simulate", "packing", "--mode", "dynamic", "--nodes", str(nodes), "--pods", str(pods),
               "--load", "1.0", "--seeds", "2", "--policy", "gensched,fgd-fifo,bestfit-fifo,fgd-backfill",
               "--warmup-h", "0.2", "--horizon-h", "1", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["trace"]["clamped_zero_duration_to_1s"] == 1 and data["trace"]["dropped_missing_times"] == 1
    assert set(data["policies"]) == {"gensched", "fgd-fifo", "bestfit-fifo", "fgd-backfill"}
    for block in data["policies"].values():
        for key in ("time_avg_allocation", "max_wait_8gpu_s", "preemption_loss_frac"):
            assert set(block[key]) == {"median", "per_seed"} and len(block[key]["per_seed"]) == 2
        assert set(block["queue_delay_p99_s"]) >= {"share", "1gpu", "2-4gpu", "8gpu"}
        assert len(block["queue_delay_p99_s"]["1gpu"]["per_seed"]) == 2
        assert 0 < block["time_avg_allocation"]["median"] <= 1
    assert "load 1" in capsys.readouterr().out
    rc = main(["simulate", "packing", "--mode", "dynamic", "--nodes", str(nodes), "--pods", str(pods),
               "--load", "0.8,1.2", "--seeds", "1", "--policy", "gensched,fgd-fifo", "--warmup-h", "0.2",
               "--horizon-h", "1", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data["loads"]) == {"0.8", "1.2"} and set(data["loads"]["1.2"]["policies"]) == {"gensched", "fgd-fifo"}


def test_cli_names_a_bad_policy_or_load(tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    nodes, pods = _csvs(tmp_path)
    base = ["simulate", "packing", "--mode", "dynamic", "--nodes", str(nodes), "--pods", str(pods)]
    assert main([*base, "--policy", "fgd"]) == 2
    assert "--policy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*base, "--load", "0"])
    assert exc.value.code == 2 and "--load" in capsys.readouterr().err


def _earliest_reference(state, req, rows, by_row, now):
    """The plain walk: for each capable node, add back ending work in end order until the job fits."""
    import math

    rows = rows[np.argsort(-state.gpu_free[rows].sum(axis=1), kind="stable")]
    best = None
    for row in map(int, rows):
        free, memf = state.gpu_free[row].copy(), state.gpu_mem_free[row].copy()
        cpu, mem = int(state.cpu_free[row]), int(state.mem_free[row])
        t = now if state.fits_node(row, req, free, memf, cpu, mem) else math.inf
        if t > now:
            for r in sorted(by_row.get(row, ()), key=lambda r: (r.expected_end is None, r.expected_end or 0)):
                for g in r.alloc.gpu_indices:
                    free[g] += r.alloc.gpu_milli
                    memf[g] += r.alloc.gpu_memory_gib
                cpu, mem = cpu + r.alloc.cpu_milli, mem + r.alloc.memory_mib
                if state.fits_node(row, req, free, memf, cpu, mem):
                    t = max(now, r.expected_end) if r.expected_end is not None else math.inf
                    break
        if best is None or t < best[1]:
            best = (row, t)
            if t <= now:
                break
    return best


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(snapshots())
def test_the_cycles_fast_paths_agree_with_the_plain_definitions(snap):
    """The cycle's filter shortcut and its earliest-start walk give what ClusterState.feasible and the plain
    walk give (they decide who backfills and which node is held for the head job)."""
    from gensched.sched.capacity import earliest_start
    from gensched.sched.cycle import _Cycle

    cyc = _Cycle(snap, cache(get_placer))
    st = snap.state
    rng = np.random.default_rng(len(snap.waiting))
    by_row: dict[int, list] = {}
    for r in snap.running:
        by_row.setdefault(st.index[r.alloc.node], []).append(r)
    for job in snap.waiting:
        block = rng.random(len(st.index)) < 0.3
        st.mask(block)
        want = bool(st.feasible(job.request).any())
        st.mask(None)
        assert cyc._any_fits(job.request, block) == want
        rows = np.arange(len(st.index))
        assert earliest_start(st, job.request, rows, by_row, 5.0) == _earliest_reference(st, job.request, rows,
                                                                                         by_row, 5.0)


def test_more_reservations_hold_a_node_for_each_blocked_job_and_none_is_delayed():
    from gensched.packing import Allocation
    from gensched.sched import RunningJob, Settings, Snapshot, WaitingJob, WaitReason

    state = ClusterState([GpuNode(f"n{i}", 8, "A100", 80.0, 96_000, 1024 * 1024) for i in range(3)])
    running = []
    for i, end in enumerate((100.0, 200.0, 300.0)):
        alloc = Allocation(f"r{i}", f"n{i}", (0,), 1000, 0.0, 1000, 1024)
        state.reserve(alloc)
        running.append(RunningJob(f"r{i}", alloc, expected_end=end, strategy="BestFit"))

    def job(key: str, gpus: int, at: float, dur: float | None = None) -> WaitingJob:
        return WaitingJob(key, GpuRequest(key, whole_gpus=gpus, cpu_milli=1000, memory_mib=1024), queued_at=at,
                          duration_s=dur, strategy="BestFit")

    waiting = [job("big1", 8, 0), job("big2", 8, 1), job("long", 7, 2, 1000.0), job("long2", 7, 3, 1000.0)]
    one = schedule(Snapshot(state=state, now=0.0, waiting=waiting, running=running,
                            settings=Settings(reservations=1, preemption=False, defragmentation=False)),
                   cache(get_placer))
    assert [(r.key, r.node, r.start) for r in one.reservations] == [("big1", "n0", 100.0)]
    assert sorted(p.alloc.node for p in one.placed) == ["n1", "n2"]  # EASY: only n0 is held
    for p in one.placed:
        state.release(p.key)
    two = schedule(Snapshot(state=state, now=0.0, waiting=waiting, running=running,
                            settings=Settings(reservations=2, preemption=False, defragmentation=False)),
                   cache(get_placer))
    assert [(r.key, r.node, r.start) for r in two.reservations] == [("big1", "n0", 100.0), ("big2", "n1", 200.0)]
    assert two.head == two.reservations[0]
    assert {p.key: p.alloc.node for p in two.placed} == {"long": "n2"}  # n0 and n1 are held past its end
    assert {w.key: w.reason for w in two.waiting}["long2"] == WaitReason.BEHIND_HEAD
    for p in two.placed:
        state.release(p.key)
    short = [*waiting[:2], job("short", 7, 2, 150.0)]  # ends before n1's reserved start: may use n1
    three = schedule(Snapshot(state=state, now=0.0, waiting=short, running=running,
                              settings=Settings(reservations=2, preemption=False, defragmentation=False)),
                     cache(get_placer))
    assert {p.key: p.alloc.node for p in three.placed}["short"] in ("n1", "n2")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(snapshots())
def test_no_reserved_start_is_delayed_by_what_backfills(snap):
    from gensched.sched import Backfill, RunningJob, Settings
    from gensched.sched.capacity import earliest_start

    snap.settings = Settings(backfill=Backfill.EASY, reservations=3)
    out = schedule(snap, cache(get_placer))
    if out.evictions:
        return
    s = snap.state
    jobs = {j.key: j for j in snap.waiting}
    assert len({r.node for r in out.reservations}) == len(out.reservations) <= 3
    for res in out.reservations:
        row = s.index[res.node]
        there = [r for r in snap.running if r.alloc.node == res.node]
        for p in out.placed:
            if p.alloc.node == res.node:
                d = jobs[p.key].duration_s
                there.append(RunningJob(p.key, p.alloc, expected_end=None if d is None else d))
        found = earliest_start(s, jobs[res.key].request, np.array([row]), {row: there}, 0.0)
        assert found is not None and found[1] <= res.start + 1e-9
