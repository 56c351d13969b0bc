"""The scheduling cycle (pure): queue order, backfill, quotas, preemption, defragmentation."""

from __future__ import annotations

from functools import cache

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gensched.packing import Allocation, ClusterState, GpuNode, GpuRequest, get_placer
from gensched.sched import (
    Backfill,
    Quota,
    RunningJob,
    Settings,
    Snapshot,
    Taint,
    Toleration,
    WaitingJob,
    WaitReason,
    schedule,
)
from gensched.sched.capacity import earliest_start


@cache
def placers(name: str):
    return get_placer(name)


def nodes(n: int = 2, gpus: int = 8) -> list[GpuNode]:
    return [GpuNode(f"n{i}", gpus, "A100", 80.0, 96_000, 1024 * 1024) for i in range(n)]


def job(key: str, gpus: int = 1, milli: int = 1000, **kw) -> WaitingJob:
    req = GpuRequest(key, whole_gpus=gpus if milli == 1000 else 0, gpu_milli=milli, cpu_milli=1000, memory_mib=1024)
    return WaitingJob(key=key, request=req, strategy="BestFit", **kw)


def hold(state: ClusterState, key: str, node: str, gpus: list[int], milli: int = 1000, **kw) -> RunningJob:
    alloc = Allocation(key, node, tuple(gpus), milli, 0.0, 1000, 1024)
    state.reserve(alloc)
    return RunningJob(key=key, alloc=alloc, strategy="BestFit", **kw)


def run(state, waiting, running=(), now=0.0, **kw):
    cfg = kw.pop("settings", Settings())
    snap = Snapshot(state=state, now=now, waiting=list(waiting), running=list(running), settings=cfg, **kw)
    return schedule(snap, placers)


def test_priority_then_deadline_then_age():
    state = ClusterState(nodes(1, 1))
    out = run(state, [job("old", queued_at=0), job("urgent", queued_at=5, latest_start=100),
                      job("vip", queued_at=9, priority=10)])
    assert out.order == ["vip", "urgent", "old"]
    assert [p.key for p in out.placed] == ["vip"]
    pos = {w.key: w.position for w in out.waiting}
    assert pos == {"urgent": 2, "old": 3}


def test_an_eight_gpu_job_is_not_starved_by_small_jobs_of_unknown_length():
    state = ClusterState(nodes(2))
    running = [hold(state, "a", "n0", [0], expected_end=100.0), hold(state, "b", "n1", [0, 1], expected_end=500.0)]
    out = run(state, [job("big", 8, queued_at=0), job("small", 1, queued_at=1), job("short", 1, queued_at=2,
                                                                                  duration_s=50)], running)
    assert out.head is not None and out.head.key == "big" and out.head.node == "n0" and out.head.start == 100.0
    placed = {p.key: p.alloc.node for p in out.placed}
    assert placed["small"] == "n1"  # unknown length: kept off the held node
    assert placed.get("short") in ("n0", "n1")  # ends before the head's start: may backfill anywhere


def test_a_head_whose_node_has_no_known_end_holds_nothing():
    # what runs on the only node has no estimated end (a foreign pod, a job without estimatedDuration): the
    # head's start is unknown, so an unknown-length job behind it may use the free GPU meanwhile
    state = ClusterState(nodes(1, 2))
    running = [hold(state, "foreign", "n0", [0])]
    out = run(state, [job("two", 2, queued_at=0), job("one", 1, queued_at=1)], running)
    assert out.head is not None and out.head.key == "two" and out.head.start == float("inf")
    assert [p.key for p in out.placed] == ["one"]
    assert "not held" in next(w.message for w in out.waiting if w.key == "two")


def test_strict_fifo_places_nothing_behind_a_blocked_head():
    state = ClusterState(nodes(1))
    running = [hold(state, "a", "n0", [0])]
    out = run(state, [job("big", 8), job("small", 1, queued_at=1)], running,
              settings=Settings(backfill=Backfill.NONE))
    assert out.placed == []
    assert {w.key: w.reason for w in out.waiting} == {"big": WaitReason.UNSCHEDULABLE, "small": WaitReason.BEHIND_HEAD}


def test_unrestricted_backfill_lets_small_jobs_pass():
    state = ClusterState(nodes(1))
    running = [hold(state, "a", "n0", [0])]
    out = run(state, [job("big", 8), job("small", 1, queued_at=1)], running,
              settings=Settings(backfill=Backfill.UNRESTRICTED))
    assert [p.key for p in out.placed] == ["small"]


def test_quota_binds_and_names_the_limit():
    state = ClusterState(nodes(1))
    quotas = {"team-a": Quota("team-a", max_gpus=2)}
    out = run(state, [job("a1", 2, namespace="team-a"), job("a2", 1, namespace="team-a", queued_at=1),
                      job("b1", 1, namespace="team-b", queued_at=2)], quotas=quotas)
    assert {p.key for p in out.placed} == {"a1", "b1"}
    (w,) = out.waiting
    assert w.key == "a2" and w.reason == WaitReason.QUOTA and "2 GPU quota" in w.message and "maxGpus" in w.message


def test_cohort_borrowing_uses_idle_quota_only_when_allowed():
    quotas = {"a": Quota("a", max_gpus=2, cohort="lab", borrowing=True), "b": Quota("b", max_gpus=4, cohort="lab"),
              "c": Quota("c", max_gpus=1, cohort="lab")}
    state = ClusterState(nodes(1))
    out = run(state, [job("a1", 4, namespace="a"), job("c1", 2, namespace="c", queued_at=1)], quotas=quotas)
    assert [p.key for p in out.placed] == ["a1"]  # a borrows b's idle quota; c may not borrow
    assert out.waiting[0].reason == WaitReason.NEVER_FITS  # 2 GPUs > c's quota of 1, no borrowing


def test_a_job_that_can_never_fit_says_why():
    state = ClusterState(nodes(1, 4))
    h100 = WaitingJob("h", GpuRequest("h", whole_gpus=1, gpu_models=("H100",)), strategy="BestFit")
    out = run(state, [job("eight", 8), h100])
    reasons = {w.key: (w.reason, w.message) for w in out.waiting}
    assert reasons["eight"][0] == WaitReason.NEVER_FITS and "largest eligible node has 4" in reasons["eight"][1]
    assert reasons["h"][0] == WaitReason.NEVER_FITS and "H100" in reasons["h"][1]
    assert out.head is None  # jobs that can never fit hold nothing for themselves


def test_taints_keep_jobs_off_unless_tolerated_and_the_gpu_taint_is_always_tolerated():
    state = ClusterState(nodes(2))
    taints = {"n0": (Taint("dedicated", "infer", "NoSchedule"),), "n1": (Taint("nvidia.com/gpu", None, "NoSchedule"),)}
    out = run(state, [job("a", 8), job("b", 8, queued_at=1)], taints=taints)
    assert {p.key: p.alloc.node for p in out.placed} == {"a": "n1"}
    tol = (Toleration("dedicated", "Equal", "infer", "NoSchedule"),)
    state2 = ClusterState(nodes(2))
    out2 = run(state2, [job("a", 8), job("b", 8, queued_at=1, tolerations=tol)], taints=taints)
    assert {p.key: p.alloc.node for p in out2.placed} == {"a": "n1", "b": "n0"}


def test_cordoned_node_keeps_its_work_but_gets_no_new_work():
    ns = [GpuNode("n0", 8, "A100", schedulable=False), GpuNode("n1", 8, "A100")]
    state = ClusterState(ns)
    running = [hold(state, "old", "n0", [0])]
    out = run(state, [job("a", 8), job("b", 1, queued_at=1)], running)
    assert {p.key: p.alloc.node for p in out.placed} == {"a": "n1"}
    assert out.waiting[0].key == "b"
    assert state.allocation("old") is not None


def test_preemption_suspends_only_lower_priority_interruptible_jobs():
    state = ClusterState(nodes(1))
    running = [hold(state, "low", "n0", [0, 1, 2, 3], priority=0, interruptible=True, started_at=0),
               hold(state, "pinned", "n0", [4, 5], priority=0, interruptible=False),
               hold(state, "peer", "n0", [6, 7], priority=5, interruptible=True)]
    out = run(state, [job("vip", 4, priority=5)], running, now=100)
    assert [(e.key, e.reason, e.by) for e in out.evictions] == [("low", "Preempted", "vip")]
    (w,) = out.waiting
    assert w.reason == WaitReason.PREEMPTING and w.nominated_node == "n0"
    out2 = run(ClusterState(nodes(1)), [job("vip", 8, priority=5)],
               [hold(ClusterState(nodes(1)), "pinned", "n0", [0], interruptible=False)])
    assert out2.evictions == []


def test_preempted_work_is_held_for_the_preemptor_until_it_leaves():
    state = ClusterState(nodes(1))
    running = [hold(state, "low", "n0", list(range(8)), interruptible=True, evicting=True)]
    out = run(state, [job("vip", 4, priority=5, nominated_node="n0"), job("other", 1, queued_at=1)], running)
    assert out.evictions == [] and out.placed == []
    assert out.waiting[0].reason == WaitReason.PREEMPTING


def test_defragmentation_moves_interruptible_jobs_to_open_a_node():
    state = ClusterState(nodes(2))
    running = [hold(state, "a", "n0", [0], interruptible=True), hold(state, "b", "n1", [0], interruptible=True)]
    out = run(state, [job("big", 8)], running)
    assert len(out.evictions) == 1 and out.evictions[0].reason == "Defragment"
    moved = out.evictions[0].key
    assert out.waiting[0].reason == WaitReason.DEFRAGMENTING
    assert out.waiting[0].nominated_node == ("n0" if moved == "a" else "n1")
    state2 = ClusterState(nodes(2))
    fixed = [hold(state2, "a", "n0", [0]), hold(state2, "b", "n1", [0])]
    assert run(state2, [job("big", 8)], fixed).evictions == []  # non-interruptible work is never moved


def test_moves_and_preemptions_are_bounded_per_cycle():
    state = ClusterState(nodes(1))
    running = [hold(state, f"j{i}", "n0", [i], interruptible=True) for i in range(8)]
    out = run(state, [job("vip", 8, priority=9)], running, settings=Settings(max_preemptions=3))
    assert out.evictions == []  # needs 8 victims, only 3 allowed


# -- properties --------------------------------------------------------------------------------------------

@st.composite
def snapshots(draw):
    n = draw(st.integers(1, 4))
    ns = [GpuNode(f"n{i}", draw(st.sampled_from([2, 4, 8])), "A100", 80.0, 64_000, 512 * 1024) for i in range(n)]
    state = ClusterState(ns)
    running = []
    for i in range(draw(st.integers(0, 10))):
        node = draw(st.sampled_from(ns))
        free = [g for g in range(node.gpu_count) if state.gpu_free[state.index[node.name], g] == 1000]
        if not free:
            continue
        k = draw(st.integers(1, len(free)))
        running.append(hold(state, f"r{i}", node.name, free[:k], priority=draw(st.integers(0, 3)),
                            interruptible=draw(st.booleans()), namespace=draw(st.sampled_from("ab")),
                            expected_end=draw(st.one_of(st.none(), st.floats(1, 1000))), started_at=0.0))
    waiting = []
    for i in range(draw(st.integers(1, 12))):
        whole = draw(st.sampled_from([0, 1, 2, 4, 8]))
        milli = 1000 if whole else draw(st.sampled_from([250, 500]))
        req = GpuRequest(f"w{i}", whole_gpus=whole, gpu_milli=milli, cpu_milli=1000, memory_mib=1024)
        waiting.append(WaitingJob(f"w{i}", req, namespace=draw(st.sampled_from("ab")),
                                  priority=draw(st.integers(0, 3)), queued_at=float(i), strategy="BestFit",
                                  duration_s=draw(st.one_of(st.none(), st.floats(1, 2000))),
                                  interruptible=draw(st.booleans())))
    quotas = {"a": Quota("a", max_gpus=draw(st.sampled_from([None, 2.0, 6.0])))}
    cfg = Settings(backfill=draw(st.sampled_from(list(Backfill))))
    return Snapshot(state=state, now=0.0, waiting=waiting, running=running, quotas=quotas, settings=cfg)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(snapshots())
def test_cycle_invariants(snap):
    running = {r.key: r for r in snap.running}
    out = schedule(snap, placers)
    s = snap.state
    # no over-commit: free capacity stays within [0, capacity]
    assert (s.gpu_free >= 0).all() and (s.gpu_free <= 1000).all() and (s.cpu_free >= 0).all()
    # every waiting job gets exactly one decision
    decided = [p.key for p in out.placed] + [w.key for w in out.waiting]
    assert sorted(decided) == sorted(j.key for j in snap.waiting)
    # quota: namespace a never exceeds its GPUs through new placements
    q = snap.quotas["a"].max_gpus
    if q is not None:
        jobs = {j.key: j for j in snap.waiting}
        held = sum(r.gpus for r in snap.running if r.namespace == "a")
        new = sum(jobs[p.key].gpus for p in out.placed if jobs[p.key].namespace == "a")
        assert new == 0 or held + new <= q + 1e-9
    # preemption only of lower-priority interruptible work; moves only of interruptible work
    prio = {j.key: j.priority for j in snap.waiting}
    for e in out.evictions:
        victim = running[e.key]
        assert victim.interruptible
        if e.reason == "Preempted":
            assert victim.priority < prio[e.by]
        else:
            assert victim.priority <= prio[e.by]
    assert len([e for e in out.evictions if e.reason == "Preempted"]) <= snap.settings.max_preemptions
    assert len([e for e in out.evictions if e.reason == "Defragment"]) <= snap.settings.max_moves
    # strict FIFO: nothing placed after the first blocked job
    if snap.settings.backfill == Backfill.NONE and out.head is not None:
        order = out.order
        head_at = order.index(out.head.key)
        assert all(order.index(p.key) < head_at for p in out.placed)
    # EASY: the head job's reserved start is not delayed by what was placed after it
    if snap.settings.backfill == Backfill.EASY and out.head is not None and not out.evictions:
        head = next(j for j in snap.waiting if j.key == out.head.key)
        row = s.index[out.head.node]
        by_row: dict[int, list[RunningJob]] = {row: [r for r in snap.running if r.alloc.node == out.head.node]}
        jobs = {j.key: j for j in snap.waiting}
        for p in out.placed:
            if p.alloc.node == out.head.node:
                d = jobs[p.key].duration_s
                by_row[row].append(RunningJob(p.key, p.alloc, expected_end=None if d is None else d))
        found = earliest_start(s, head.request, np.array([row]), by_row, 0.0)
        assert found is not None and found[1] <= out.head.start + 1e-9
